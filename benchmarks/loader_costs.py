"""The loader's per-event costs that do not depend on the file layout, per 100 000 events.

Usage: ``python benchmarks/loader_costs.py [--events 400000]``

The same events are read into memory once per partitioning (2 files in partitions of 200 000
and of 20 000 entries, 8 files in partitions of 50 000 and of 10 000), then each step after
reading is timed on its own, in this process, as the loader runs it:

* ``pack``: a partition's awkward array to normalized values, not yet padded (on a worker);
* ``send`` / ``receive``: the packed partition serialized and deserialized the way Dask
  moves it between processes (``distributed.protocol``);
* ``unpack``: the pieces of every chunk unpacked into padded float32 rows (on the trainer);
* ``batches``: each batch's rows taken in the chunk's shuffled order (on the trainer).

Also the bytes sent per event, and those of the padded rows they become.

No step should grow with the number of files or partitions: each works on every event once.
Writes ``loader-costs.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ensure_data

CASES = ((1, 200_000), (1, 20_000), (4, 50_000), (4, 10_000))  # (files per class, entries per partition)


def _best(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _as_read(partition: Any, file_index: int, start: int) -> Any:
    return partition


def _case(files: list[str], step: int, per_class: int) -> dict[str, float]:
    """The costs of each step, in ms per 100 000 events, for ``files`` cut every ``step`` entries."""
    import numpy as np
    from distributed.protocol import deserialize_bytes, serialize_bytelist

    import mlaas4hep_dask as m
    from mlaas4hep_dask.batches._plan import plan_chunks
    from mlaas4hep_dask.handle._layout import Layout, Packed
    from mlaas4hep_dask.handle._preprocess import make_plan
    from mlaas4hep_dask.handle._rows import Chunk
    from mlaas4hep_dask.handle._tensorize import Tensorize
    from mlaas4hep_dask.scale._cluster import compute

    params = m.load_params({"chunk_size": step, "split": 0.0, "batch_size": 1024})
    dataset = m.open_dataset(files, params)
    plan = make_plan(None, dataset.available, dataset.branches, [])
    dataset = dataset.with_step(step, plan.columns)
    specs = m.compute_specs(dataset, params, client="sync")
    layout = Layout.from_specs(specs, params)
    tensorize = Tensorize(plan, layout, params, "train", [1.0, 0.0] * per_class)
    parts = compute(dataset.map_partitions(_as_read, plan.columns), "sync")
    where = dataset.partitions
    n = sum(len(p) for p in parts)

    def run_pack() -> list[Any]:
        return [tensorize(p, f, a) for p, (f, a, _) in zip(parts, where, strict=True)]

    blocks = run_pack()
    wire = [serialize_bytelist(b) for b in blocks]
    costs = {
        "pack": _best(run_pack),
        "send": _best(lambda: [serialize_bytelist(b) for b in blocks]),
        "receive": _best(lambda: [deserialize_bytes(b"".join(w)) for w in wire]),
    }
    ready = [Packed(*b) for b in blocks]
    chunks = plan_chunks([len(b) for b in ready], [f for f, _, _ in where], 100_000)
    rng = np.random.default_rng(0)

    def unpack() -> list[Chunk]:
        return [Chunk.assemble(layout, [(ready[p.partition], p.lo, p.hi) for p in c], rng) for c in chunks]

    assembled = unpack()

    def batches() -> None:
        for chunk in assembled:
            for a in range(0, len(chunk), 1024):
                chunk.rows(a, a + 1024)

    costs["unpack"] = _best(unpack)
    costs["batches"] = _best(batches)
    sent = sum(sum(len(f) for f in w) for w in wire)
    row: dict[str, float] = {"files": len(files), "partitions": len(parts), "events": n}
    row |= {"bytes_sent_per_event": sent / n, "bytes_per_row": 4 * layout.idim}
    return row | {k: 1e3 * v * 100_000 / n for k, v in costs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    args = parser.parse_args()

    rows = []
    for per_class, step in CASES:
        files = [str(f) for f in ensure_data(args.out / f"data-costs-{per_class}", args.events, per_class)]
        row = _case(files, step, per_class)
        rows.append(row)
        costs = ("pack", "send", "receive", "unpack", "batches")
        print(
            f"{row['files']} files, {row['partitions']:>3} partitions: "
            + ", ".join(f"{k} {row[k]:.1f} ms" for k in costs)
            + f" per 100 000 events; {row['bytes_sent_per_event']:.0f} bytes sent per event"
            + f" for rows of {row['bytes_per_row']:.0f}",
            flush=True,
        )
    out = args.out / "loader-costs.json"
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()

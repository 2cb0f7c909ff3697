"""The same events written as TTrees in different basket layouts (for partitioning tests).

``uproot``'s ``extend`` writes one basket per branch, all ending at the same entry.  ROOT
files often have branches whose baskets end at different entries (a basket is flushed when
its buffer fills, and wide branches fill theirs sooner); :func:`write_staggered` writes that
layout through uproot's own basket writers, giving each branch its own basket sizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

TREE = "events"
FLAT = ("a", "b", "c")
JAGGED = ("v1", "v2")


def events(n: int, seed: int) -> dict[str, np.ndarray | ak.Array]:
    """``n`` events: three flat float branches, two jagged ones sharing a counter ``nv``."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(4, n)
    out: dict[str, np.ndarray | ak.Array] = {name: rng.normal(i, 1 + i, n) for i, name in enumerate(FLAT)}
    for i, name in enumerate(JAGGED):
        out[name] = ak.unflatten(rng.exponential(10 + i, int(counts.sum())).astype(np.float32), counts)
    return out


def _types() -> dict[str, str | np.dtype]:
    return {**{n: np.dtype(np.float64) for n in FLAT}, **dict.fromkeys(JAGGED, "var * float32")}


def write_baskets(path: Path, data: Mapping[str, np.ndarray | ak.Array], basket: int) -> Path:
    """All branches flushed together every ``basket`` entries (one ``extend`` per basket)."""
    n = len(data[FLAT[0]])
    with uproot.recreate(path) as fout:
        tree = fout.mktree(TREE, _types(), counter_name=lambda _: "nv")
        for start in range(0, n, basket):
            tree.extend({k: v[start : start + basket] for k, v in data.items()})
    return path


def write_staggered(
    path: Path, data: Mapping[str, np.ndarray | ak.Array], sizes: Mapping[str, Sequence[int]]
) -> Path:
    """Each branch in its own basket sizes ``sizes[name]`` (same number of baskets per branch).

    The counter ``nv`` follows the first jagged branch.  Every branch's sizes must add up to
    the number of events.
    """
    n = len(data[FLAT[0]])
    sizes = {**sizes, "nv": sizes[JAGGED[0]]}
    rounds = {len(s) for s in sizes.values()}
    assert len(rounds) == 1, "every branch needs the same number of baskets"
    assert all(sum(s) == n for s in sizes.values())
    nbaskets = rounds.pop()
    columns = {**data, "nv": np.asarray(ak.num(data[JAGGED[0]]), dtype=np.int32)}
    with uproot.recreate(path) as fout:
        writable = fout.mktree(
            TREE, _types(), counter_name=lambda _: "nv", initial_basket_capacity=nbaskets + 2
        )
        cascade = writable._cascading
        sink = fout.file.sink
        starts = dict.fromkeys(sizes, 0)
        for r in range(nbaskets):
            uncompressed = compressed = 0
            for name, per_branch in sizes.items():
                datum = cascade._branch_data[cascade._branch_lookup[name]]
                lo, hi = starts[name], starts[name] + per_branch[r]
                starts[name] = hi
                chunk = columns[name][lo:hi]
                if name in JAGGED:
                    layout = ak.to_layout(chunk)
                    offsets = np.asarray(layout.offsets.data, dtype=np.int64)
                    offsets = (offsets - offsets[0]).astype(">i4")  # uproot's writer wants them big-endian
                    content = np.asarray(ak.flatten(chunk), dtype=datum["dtype"])
                    tot, zipped, where = cascade.write_jagged_basket(
                        sink, name, datum["compression"], content, offsets
                    )
                    datum["fEntryOffsetLen"] = 4 * (len(offsets) - 1)
                else:
                    array = np.asarray(chunk, dtype=datum["dtype"])
                    tot, zipped, where = cascade.write_np_basket(sink, name, datum["compression"], array)
                uncompressed += tot
                compressed += zipped
                datum["fTotBytes"] += tot
                datum["fZipBytes"] += zipped
                datum["fBasketBytes"][cascade._num_baskets] = zipped
                datum["fBasketEntry"][cascade._num_baskets + 1] = hi
                datum["fBasketSeek"][cascade._num_baskets] = where
                datum["arrays_write_stop"] = cascade._num_baskets + 1
            cascade._num_entries = max(starts.values())
            cascade._num_baskets += 1
            cascade._metadata["fTotBytes"] += uncompressed
            cascade._metadata["fZipBytes"] += compressed
            cascade.write_updates(sink)
    return path

"""The live progress of a training: a bar with events/s, or log lines for batch jobs and the service."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["Progress"]


_log = logging.getLogger("mlaas4hep_dask")


class Progress:
    """Training progress: a live bar with events/s (rich), log lines every ``log_every`` s, or nothing.

    A log line reads ``progress: training DONE/TOTAL events (P%), R events/s, ETA S s, epoch
    E/N`` (and the last epoch's validation metrics); the service parses its start for a job's
    progress, so keep its shape.
    """

    def __init__(
        self, total: int, enabled: bool, log_every: float | None = None, epochs: int = 1, first: int = 1
    ) -> None:
        self.bar: Any = None
        self.total = total
        self.done = 0
        self.log_every = log_every
        self.epochs = epochs
        self.epoch = f"epoch {first}/{epochs}"
        self.start = self.logged = time.perf_counter()
        if enabled and log_every is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>12} events/s"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[epoch]}"),
            )
            self.task = self.bar.add_task("train", total=total, rate="", epoch=self.epoch)
            self.bar.start()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        rate = self.done / max(now - self.start, 1e-9)
        if self.bar is not None:
            self.bar.update(self.task, advance=n, rate=f"{rate:,.0f}")
        elif self.log_every is not None and (now - self.logged >= self.log_every or self.done >= self.total):
            self.logged = now
            eta = max(self.total - self.done, 0) / rate if rate > 0 else float("nan")
            _log.info(
                "progress: training %d/%d events (%.1f%%), %.0f events/s, ETA %.0f s, %s",
                self.done, self.total, 100 * self.done / max(self.total, 1), rate, eta, self.epoch,
            )  # fmt: skip

    def epoch_done(self, row: Mapping[str, Any]) -> None:
        """Show the next epoch and the validation metrics of the one that ended."""
        ended = int(row["epoch"])
        shown = ", ".join(
            f"{k} {v:.4g}" for k, v in row.items() if k.startswith("val_") and isinstance(v, float)
        )
        following = f"epoch {min(ended + 1, self.epochs)}/{self.epochs}"
        self.epoch = f"{following} (epoch {ended}: {shown})" if shown else following
        if self.bar is not None:
            self.bar.update(self.task, epoch=self.epoch)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()

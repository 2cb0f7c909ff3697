"""PyTorch backend: our loop over the stream, on CUDA when present, saved with torch.export."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep_dask.batches._loader import BatchLoader
from mlaas4hep_dask.fit._common import Fitting, StepTimes, Task, learning_rate, optional_import

__all__ = ["fit", "load", "pick_device", "predict", "restore", "save", "state"]

FILENAME = "model.pt2"


def _torch() -> Any:
    return optional_import("torch", "pip install torch==2.13.0")


def pick_device(device: str) -> str:
    """``"cuda"`` when asked for or (``"auto"``) when a GPU is there, else ``"cpu"``."""
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but PyTorch sees no CUDA GPU")
    return device


def _is_keras(model: Any) -> bool:
    """A Keras 3 model on the torch backend (data-parallel Keras trains through this loop)."""
    return any(k.__module__.startswith("keras") for k in type(model).__mro__)


def _ends_with_probability(model: Any) -> bool:
    """Whether the model's last layer already squashes to [0, 1] (Sigmoid/Softmax)."""
    torch = _torch()
    if _is_keras(model):
        activation = getattr(model.layers[-1], "activation", None) if model.layers else None
        return getattr(activation, "__name__", "") in ("sigmoid", "softmax")
    modules = [m for m in model.modules() if not list(m.children())]
    return bool(modules) and isinstance(modules[-1], (torch.nn.Sigmoid, torch.nn.Softmax))


def _loss(model: Any, task: Task) -> Callable[[Any, Any], Any]:
    nn = _torch().nn
    probabilities = _ends_with_probability(model)
    if task.kind == "binary":
        return nn.BCELoss(reduction="none") if probabilities else nn.BCEWithLogitsLoss(reduction="none")
    if task.kind == "multiclass":
        if probabilities:
            return lambda out, y: nn.functional.nll_loss(out.clamp_min(1e-7).log(), y, reduction="none")
        return nn.CrossEntropyLoss(reduction="none")
    return nn.MSELoss(reduction="none")


def state(model: Any, optimizer: Any, epoch: int) -> bytes:
    """A checkpoint after ``epoch``: the module's state (and the optimizer's, if given).

    A Keras model (data-parallel Keras trains in this loop) keeps Keras's own form, which
    loads on any Keras backend (see :func:`mlaas4hep_dask.fit.keras.state`).
    """
    import io

    if _is_keras(model):
        from mlaas4hep_dask.fit.keras import state as keras_state

        return keras_state(model, epoch)
    torch = _torch()
    buffer = io.BytesIO()
    saved = {"epoch": epoch, "model": model.state_dict()}
    if optimizer is not None:
        saved["optimizer"] = optimizer.state_dict()
    torch.save(saved, buffer)
    return buffer.getvalue()


def restore(blob: bytes, model: Any, optimizer: Any = None) -> int:
    """Load a checkpoint made by :func:`state` into ``model`` (and ``optimizer``); return its epoch."""
    import io

    if _is_keras(model):
        from mlaas4hep_dask.fit.keras import restore as keras_restore

        return keras_restore(blob, model)
    saved = _torch().load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    if optimizer is not None and "optimizer" in saved:
        optimizer.load_state_dict(saved["optimizer"])
    return int(saved["epoch"])


def fit(model: Any, train: BatchLoader, how: Fitting) -> Any:
    """Adam at ``learning_rate`` (see :func:`~mlaas4hep_dask.fit._common.learning_rate`); bf16
    autocast on CUDA (no loss scaling needed).

    With ``how.average`` (data-parallel ranks) the gradients are averaged over the ranks after
    each backward pass; the module stays unwrapped, so checkpoints load anywhere.  Each step's
    phases are timed into ``how.times`` when given.
    """
    torch = _torch()
    task, params, device = how.task, how.params, how.device
    torch.manual_seed(params.seed)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    done = restore(how.resume, model, optimizer) if how.resume is not None else 0
    train.epoch = done  # the shuffles continue as if the run had not stopped
    average = how.average(model) if how.average is not None else None
    shard = getattr(train, "shard", None)
    world, events = (shard.world if shard is not None else 1), max(len(train), 1)
    loss_fn = _loss(model, task)
    keyword = {"training": True} if _is_keras(model) else {}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    pin = device == "cuda"
    times = how.times
    clock = _Clock(times, torch if times is not None and times.synchronize and pin else None)
    rate = None
    for epoch in range(done + 1, params.epochs + 1):
        model.train()
        total, seen = torch.zeros((), device=device), 0  # summed on the device: no sync per step
        for batch in train:
            clock.start()
            step_rate = learning_rate(params, world, epoch - 1 + seen / events)
            if step_rate != rate:
                rate = step_rate
                for group in optimizer.param_groups:
                    group["lr"] = rate
            X, y, *w = (_to(torch.from_numpy(a), device, pin) for a in batch)
            clock.lap("batch")
            with autocast:
                out = model(X, **keyword).float()
            out = out.reshape(len(y)) if task.kind != "multiclass" else out
            target = y.float() if task.kind != "multiclass" else y.long()
            losses = loss_fn(out, target)
            if w:
                losses = losses * w[0]
            loss = losses.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clock.lap("compute")
            if average is not None:
                average()
                clock.lap("all_reduce")
            optimizer.step()
            clock.lap("optimizer")
            total += loss.detach() * len(y)
            seen += len(y)
            how.on_batch(len(y))
        how.on_epoch(epoch, float(total) / max(seen, 1))
        if how.checkpoint is not None:
            how.checkpoint(epoch, state(model, optimizer, epoch))
    return model


class _Clock:
    """Adds the seconds since the last mark to a phase of :class:`StepTimes` (a no-op without one)."""

    def __init__(self, times: StepTimes | None, cuda: Any = None) -> None:
        self.times, self.cuda, self.mark = times, cuda, 0.0

    def start(self) -> None:
        if self.times is not None:
            self.times.steps += 1
            self.mark = time.perf_counter()

    def lap(self, phase: str) -> None:
        if self.times is None:
            return
        if self.cuda is not None:
            self.cuda.cuda.synchronize()
        now = time.perf_counter()
        setattr(self.times, phase, getattr(self.times, phase) + now - self.mark)
        self.mark = now


def _to(tensor: Any, device: str, pin: bool) -> Any:
    """Host to device; from pinned memory (an asynchronous copy) when the device is a GPU."""
    if pin:
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def predict(model: Any, X: np.ndarray, task: Task) -> np.ndarray:
    """Probabilities (binary: of class 1) or values, computed in batches without gradients."""
    torch = _torch()
    device = next(model.parameters()).device
    model.eval()
    probabilities = _ends_with_probability(model)
    outs = []
    with torch.no_grad():
        for start in range(0, len(X), 65536):
            out = model(torch.from_numpy(X[start : start + 65536]).to(device)).float()
            if task.kind == "binary" and not probabilities:
                out = torch.sigmoid(out)
            elif task.kind == "multiclass" and not probabilities:
                out = torch.softmax(out, dim=1)
            outs.append(out.cpu().numpy())
    out = np.concatenate(outs) if outs else np.zeros((0, 1), np.float32)
    return out if task.kind == "multiclass" else out.reshape(len(X))


def save(model: Any, directory: Path, idim: int) -> str:
    """An exported program (``torch.export``, loads without model.py) with a dynamic batch size.

    A model that cannot be exported keeps its ``state_dict`` (with model.py beside it).
    """
    torch = _torch()
    model = model.to("cpu").eval()
    example = torch.zeros((2, idim), dtype=torch.float32)
    try:
        program = torch.export.export(
            model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
        )
        torch.export.save(program, directory / FILENAME)
    except Exception:
        torch.save(model.state_dict(), directory / "state_dict.pt")
        return "state_dict.pt"
    return FILENAME


class _Exported:
    """An exported program behind the ``nn.Module`` calls that :func:`predict` makes."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def __call__(self, X: Any) -> Any:
        return self.module(X)

    def parameters(self) -> Any:
        return self.module.parameters()

    def modules(self) -> Any:
        return self.module.modules()

    def eval(self) -> _Exported:
        return self


def load(path: Path) -> Any:
    return _Exported(_torch().export.load(path).module())

"""PyTorch backend: our loop over the stream, on CUDA when present, saved with torch.export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep_dask.stream import BatchLoader

from ._common import Fitting, Task, optional_import

__all__ = ["fit", "load", "pick_device", "predict", "save"]

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


def _ends_with_probability(model: Any) -> bool:
    """Whether the model's last layer already squashes to [0, 1] (Sigmoid/Softmax)."""
    torch = _torch()
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


def fit(model: Any, train: BatchLoader, how: Fitting) -> Any:
    """Adam at ``learning_rate``; bf16 autocast on CUDA (no loss scaling needed)."""
    torch = _torch()
    task, params, device = how.task, how.params, how.device
    torch.manual_seed(params.seed)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    loss_fn = _loss(model, task)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    for epoch in range(1, params.epochs + 1):
        model.train()
        total, seen = 0.0, 0
        for batch in train:
            X = torch.from_numpy(batch[0]).to(device, non_blocking=True)
            y = torch.from_numpy(batch[1]).to(device, non_blocking=True)
            with autocast:
                out = model(X).float()
            out = out.reshape(len(y)) if task.kind != "multiclass" else out
            target = y.float() if task.kind != "multiclass" else y.long()
            losses = loss_fn(out, target)
            if len(batch) == 3:
                losses = losses * torch.from_numpy(batch[2]).to(device)
            loss = losses.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(y)
            seen += len(y)
            how.on_batch(len(y))
        how.on_epoch(epoch, total / max(seen, 1))
    return model


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

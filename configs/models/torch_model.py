"""A small PyTorch classifier: model(idim) returns a torch.nn.Module (logits out)."""

import torch


def model(idim):
    return torch.nn.Sequential(
        torch.nn.Linear(idim, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 1),
    )

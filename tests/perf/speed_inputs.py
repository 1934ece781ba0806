"""Shared inputs of the speed benchmarks: Gaussian class clusters and the SGD settings."""

import torch


def sgd_training(epochs: int) -> dict:
    """The demo's head training (SGD 0.1, momentum 0.9, batch 64) for `epochs` epochs."""
    return {
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "batch_size": 64,
        "epochs": epochs,
        "schedule": "constant",
    }


def gaussian_classes(samples: int, dim: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c's samples around a standard-normal centre, unit noise; classes interleaved."""
    generator = torch.Generator().manual_seed(0)
    targets = torch.arange(samples) % classes
    centres = torch.randn(classes, dim, generator=generator)  # (classes, dim)
    inputs = centres[targets] + torch.randn(samples, dim, generator=generator)  # (samples, dim)
    return inputs, targets

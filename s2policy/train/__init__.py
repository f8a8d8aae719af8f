"""Behaviour-cloning training on frozen S2 features: `train(run_config)`; entry point `train_policy.py`."""

from .loop import train, validation_loss

__all__ = ["train", "validation_loss"]

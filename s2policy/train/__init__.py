"""Behaviour-cloning training on frozen S2 features: `train(run_config)`; entry point `train_policy.py`."""

from ..run_folder import POLICY_FILE, TRAIN_STATE_FILE
from .loop import train, validation_loss
from .run_dir import discard_unstarted_run_dir

__all__ = ["POLICY_FILE", "TRAIN_STATE_FILE", "discard_unstarted_run_dir", "train", "validation_loss"]

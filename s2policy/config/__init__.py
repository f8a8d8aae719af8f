"""Typed run configs: one dataclass per config group, validated before any work (docs/configs.md).

    from s2policy.config import TrainRun, load
    run = load(TrainRun, {"task": {"name": "lift"}, "train": {"steps": 500}})   # defaults for everything else
"""

from .checks import from_mapping, to_dict
from .groups import (CollectConfig, EncoderConfig, EvalRun, EvalSettings, FeaturesConfig, HeadConfig, S2Config,
                     StudyConfig, TaskConfig, TrainConfig, TrainRun)
from .loading import compose, config_dir, defaults_dict, load, register_schemas

__all__ = [
    "CollectConfig", "EncoderConfig", "EvalRun", "EvalSettings", "FeaturesConfig", "HeadConfig", "S2Config",
    "StudyConfig", "TaskConfig", "TrainConfig", "TrainRun", "compose", "config_dir", "defaults_dict", "from_mapping",
    "load", "register_schemas", "to_dict",
]

"""Behaviour-cloning policies: heads (the model), normalisers and the frozen encoder (processing), one `Policy`."""

from .execution import EXECUTION_MODES, ChunkExecutor
from .heads import HEADS, MLPHead, TransformerHead, build_head
from .normalizer import Normalizer
from .policy import CHECKPOINT_FORMAT, Policy, PolicyConfig, read_checkpoint, read_policy_config
from .spatial import MAP_HEADS, SpatialHead, SpatialOptions, uses_maps

__all__ = [
    "CHECKPOINT_FORMAT",
    "EXECUTION_MODES",
    "HEADS",
    "MAP_HEADS",
    "ChunkExecutor",
    "MLPHead",
    "Normalizer",
    "Policy",
    "PolicyConfig",
    "SpatialHead",
    "SpatialOptions",
    "TransformerHead",
    "build_head",
    "read_checkpoint",
    "read_policy_config",
    "uses_maps",
]

"""Frozen S2 features: the shared frame preprocessing, feature identity, and the on-disk feature cache."""

from ..data import image_key
from .cache import (
    ExtractionStats,
    FeatureCache,
    build_feature_cache,
    cache_folder,
    default_cache_root,
    feature_cache_key,
)
from .identity import encoder_identity, state_fingerprint
from .fingerprint import compute_fingerprint, dataset_fingerprint
from .frames import FrameSource, frames_to_tensor, iter_frame_batches, resolve_frame_source

__all__ = [
    "ExtractionStats",
    "FeatureCache",
    "FrameSource",
    "build_feature_cache",
    "cache_folder",
    "compute_fingerprint",
    "dataset_fingerprint",
    "default_cache_root",
    "encoder_identity",
    "feature_cache_key",
    "frames_to_tensor",
    "image_key",
    "iter_frame_batches",
    "resolve_frame_source",
    "state_fingerprint",
]

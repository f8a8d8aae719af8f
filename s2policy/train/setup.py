"""What a training run needs before its first step: the train/valid demo split, feature sources per split,
normalisers and the policy config. Each function is called once from `train`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import TrainRun
from ..data import open_episodes
from ..errors import ConfigError
from ..features import build_feature_cache
from ..features.maps import StreamedMaps, build_map_cache
from ..policy import Normalizer, PolicyConfig, SpatialOptions, uses_maps
from .data import CachedFeatures, EncodedFeatures, StepFeatures, StepTable
from ..distributed import DistInfo

log = logging.getLogger(__name__)


def split_demos(path: Path) -> tuple[list[str], list[str]]:
    """(train, valid) episodes: robomimic mask/train and mask/valid (without masks every demo trains and none
    validates); LeRobot: the split recorded at export, else a seeded 90/10 split by episode."""
    with open_episodes(path) as ds:
        return ds.split()


def build_step_features(cfg: TrainRun, path: Path, encoder: torch.nn.Module, splits: dict[str, StepTable],
                        dist: DistInfo, progress: bool) -> dict[str, StepFeatures]:
    """Per split, features of every step: from the on-disk cache (built if needed), or encoded per batch; one
    block per camera (a policy that sees no image has none: zero-width features). A spatial head streams merged S2
    maps from its own cache instead of pooled features."""
    feats, cameras = cfg.features, list(cfg.task.cameras)
    if uses_maps(cfg.policy.name):
        return _streamed_maps(cfg, path, encoder, splits, dist, progress)
    if not feats.cache:
        return {name: EncodedFeatures(str(path), steps, cameras, encoder, dist.device, cfg.precision)
                for name, steps in splits.items()}
    caches = []
    for cam in cameras:
        cache, stats = build_feature_cache(
            path, cam, encoder, camera_size=cfg.task.camera_size, source=feats.source, dtype=feats.dtype,
            store_maps=feats.store_maps, cache_root=feats.cache_dir, batch_size=feats.batch_size, device=dist.device,
            precision=cfg.precision, progress=progress and dist.is_main, backbone=feats.backbone,
        )
        if not stats.reused and dist.is_main:
            log.info("extracted %s features: %d frames, %.1f frames/s", cam, stats.frames, stats.frames_per_second)
        caches.append(cache)
    return {name: CachedFeatures(caches, steps, dist.device) for name, steps in splits.items()}


def check_head_inputs(cfg: TrainRun) -> None:
    """Fail before any work when the head cannot get its inputs (a spatial head: bad options, no camera, no cache)."""
    if not uses_maps(cfg.policy.name):
        return
    SpatialOptions.from_config({"name": cfg.policy.name, **cfg.policy.options})
    if not cfg.task.cameras:
        raise ConfigError("policy=spatial needs a camera: encoder=none sees no image")
    if not cfg.features.cache:
        raise ConfigError("policy=spatial reads merged S2 maps from the map cache: set features.cache=true")


def _streamed_maps(cfg: TrainRun, path: Path, encoder: torch.nn.Module, splits: dict[str, StepTable],
                   dist: DistInfo, progress: bool) -> dict[str, StepFeatures]:
    """Per split, every camera's merged S2 maps read from the map cache (built if needed) batch by batch."""
    feats = cfg.features
    caches = []
    for cam in cfg.task.cameras:
        cache, stats = build_map_cache(
            path, cam, encoder, camera_size=cfg.task.camera_size, source=feats.source,
            cache_root=feats.cache_dir, batch_size=feats.batch_size, device=dist.device,
            precision=cfg.precision, progress=progress and dist.is_main,
        )
        if not stats.reused and dist.is_main:
            log.info("extracted %s maps %s: %d frames, %.1f frames/s", cam, cache.shape, stats.frames,
                     stats.frames_per_second)
        caches.append(cache)
    return {name: StreamedMaps(caches, steps.demos) for name, steps in splits.items()}


def fit_normalizers(train_steps: StepTable) -> tuple[Normalizer, Normalizer]:
    """Proprio and action statistics from the training split only."""
    return Normalizer.fit(train_steps.proprio), Normalizer.fit(train_steps.actions)


def make_policy_config(cfg: TrainRun, feature_dim: int, steps: StepTable, dataset: Path,
                       map_shape: tuple[int, ...] | None = None) -> PolicyConfig:
    """The policy file's config; `dataset` is recorded as provenance. `map_shape` (cameras, C, h, w): the maps a
    spatial head consumes (None for pooled heads)."""
    pol = cfg.policy
    head_kwargs = (dict(pol.options) if map_shape is None
                   else SpatialOptions.from_config({"name": pol.name, **pol.options}).head_kwargs(map_shape))
    return PolicyConfig(
        encoder=cfg.encoder.name,
        weights=str(cfg.encoder.weights),
        s2=cfg.s2.encoder_kwargs(),
        cameras=list(cfg.task.cameras),
        camera_size=cfg.task.camera_size,
        proprio_keys=list(cfg.task.proprio_keys),
        proprio_dim=int(steps.proprio.shape[1]),
        action_dim=int(steps.actions.shape[1]),
        feature_dim=feature_dim,
        head=pol.name,
        head_kwargs=head_kwargs,
        execution=pol.execution,
        n_action_steps=pol.n_action_steps,
        ensemble_decay=pol.ensemble_decay,
        precision=cfg.precision,
        task=cfg.task.name,
        provenance={"dataset": str(dataset), "seed": cfg.seed, "run_dir": str(cfg.out_dir)},
    )

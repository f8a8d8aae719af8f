"""What a training run needs before its first step: the train/valid demo split, feature sources per split,
normalisers and the policy config. Each function is called once from `train`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import TrainRun
from ..data import open_dataset
from ..features import build_feature_cache
from ..policy import Normalizer, PolicyConfig
from .data import CachedFeatures, EncodedFeatures, StepFeatures, StepTable
from ..distributed import DistInfo

log = logging.getLogger(__name__)


def split_demos(path: Path) -> tuple[list[str], list[str]]:
    """(train, valid) demo keys from mask/train and mask/valid; without masks every demo trains and none validates."""
    with open_dataset(path) as ds:
        all_demos = list(ds.demo_keys)
        masks = set(ds.file["mask"].keys()) if "mask" in ds.file else set()
    if "train" not in masks:
        log.warning("%s has no mask/train: training on all %d demos, no validation loss", path, len(all_demos))
        return all_demos, []
    with open_dataset(path, "train") as ds:
        train = list(ds.demo_keys)
    valid: list[str] = []
    if "valid" in masks:
        with open_dataset(path, "valid") as ds:
            valid = list(ds.demo_keys)
    return train, valid


def build_step_features(cfg: TrainRun, path: Path, encoder: torch.nn.Module, splits: dict[str, StepTable],
                        dist: DistInfo, progress: bool) -> dict[str, StepFeatures]:
    """Per split, features of every step: from the on-disk cache (built if needed), or encoded per batch; one
    block per camera (a policy that sees no image has none: zero-width features)."""
    feats, cameras = cfg.features, list(cfg.task.cameras)
    if not feats.cache:
        return {name: EncodedFeatures(str(path), steps, cameras, encoder, dist.device, cfg.precision)
                for name, steps in splits.items()}
    caches = []
    for cam in cameras:
        cache, stats = build_feature_cache(
            path, cam, encoder, camera_size=cfg.task.camera_size, source=feats.source, dtype=feats.dtype,
            store_maps=feats.store_maps, cache_root=feats.cache_dir, batch_size=feats.batch_size, device=dist.device,
            precision=cfg.precision, progress=progress and dist.is_main,
        )
        if not stats.reused and dist.is_main:
            log.info("extracted %s features: %d frames, %.1f frames/s", cam, stats.frames, stats.frames_per_second)
        caches.append(cache)
    return {name: CachedFeatures(caches, steps, dist.device) for name, steps in splits.items()}


def fit_normalizers(train_steps: StepTable) -> tuple[Normalizer, Normalizer]:
    """Proprio and action statistics from the training split only."""
    return Normalizer.fit(train_steps.proprio), Normalizer.fit(train_steps.actions)


def make_policy_config(cfg: TrainRun, feature_dim: int, steps: StepTable, dataset: Path) -> PolicyConfig:
    pol = cfg.policy
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
        head_kwargs=dict(pol.options),
        execution=pol.execution,
        n_action_steps=pol.n_action_steps,
        ensemble_decay=pol.ensemble_decay,
        precision=cfg.precision,
        task=cfg.task.name,
        provenance={"dataset": str(dataset), "seed": cfg.seed, "run_dir": str(cfg.out_dir)},
    )

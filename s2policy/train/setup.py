"""What a training run needs before its first step: the dataset (collected if absent), the train/valid demo split,
feature sources per split, normalisers and the policy config. Each function is called once from `train`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch

from ..data import check_dataset, open_episodes
from ..errors import ConfigError
from ..features import build_feature_cache
from ..features.maps import StreamedMaps, build_map_cache
from ..policy import Normalizer, PolicyConfig, SpatialOptions, uses_maps
from .data import CachedFeatures, EncodedFeatures, NoFeatures, StepFeatures, StepTable
from .distributed import DistInfo, barrier

log = logging.getLogger(__name__)

# Policy-group keys that configure acting, not the head's architecture.
_EXECUTION_KEYS = ("name", "execution", "n_action_steps", "ensemble_decay")


def check_camera_size(cfg: Mapping[str, Any], native_size: int) -> None:
    """Fail before any work when frames would be smaller than one encoder crop."""
    size = cfg["task"].get("camera_size")
    if cfg["task"]["cameras"] and size is not None and int(size) < native_size:  # no cameras: frames are unused
        raise ConfigError(
            f"task.camera_size={size} is below encoder {cfg['encoder']['name']}'s native input size {native_size}"
        )


def ensure_dataset(cfg: Mapping[str, Any], dist: DistInfo) -> Path:
    """The run's dataset, checked by `check_dataset` before any stage reads it (one DatasetError naming file, demo
    and key)."""
    path = _dataset_path(cfg, dist)
    check_dataset(path)
    return path


def _dataset_path(cfg: Mapping[str, Any], dist: DistInfo) -> Path:
    """`cfg.dataset` (a robomimic file or a LeRobot dataset folder), or demos collected for the task (once: reused
    when the file exists; rank 0 collects)."""
    if cfg.get("dataset"):
        path = Path(cfg["dataset"])
        if not path.exists():
            raise ConfigError(f"dataset={path}: not found (a robomimic .hdf5 file or a LeRobot dataset folder; "
                              "leave dataset unset to collect demos for the task)")
        return path
    c, task = cfg["collect"], cfg["task"]
    size = task.get("camera_size") or 224
    path = Path(c.get("output") or f"data/{task['name']}_{c['num_demos']}demos_{size}px_seed{c['seed']}.hdf5")
    if dist.is_main and not path.is_file():
        import envs

        log.info("no dataset given: collecting %d %s demos into %s", c["num_demos"], task["name"], path)
        envs.collect_demos(task["name"], c["num_demos"], str(path), camera_size=size, seed=c["seed"],
                           workers=c["workers"], cameras=list(task["cameras"]))
    barrier()
    return path


def split_demos(path: Path) -> tuple[list[str], list[str]]:
    """(train, valid) episodes: robomimic mask/train and mask/valid (without masks every demo trains and none
    validates); LeRobot: the split recorded at export, else a seeded 90/10 split by episode."""
    with open_episodes(path) as ds:
        return ds.split()


def build_step_features(cfg: Mapping[str, Any], path: Path, encoder: torch.nn.Module, splits: dict[str, StepTable],
                        dist: DistInfo, progress: bool) -> dict[str, StepFeatures]:
    """Per split, features of every step: from the on-disk cache (built if needed), or encoded per batch."""
    feats_cfg, task = cfg["features"], cfg["task"]
    cameras = list(task["cameras"])
    if not cameras:  # task.cameras=[]: a policy that sees no image (the study's proprio-only / privileged controls)
        log.info("task.cameras is empty: training without visual features")
        return {name: NoFeatures() for name in splits}
    if uses_maps(cfg["policy"]["name"]):  # spatial heads stream merged S2 maps from their own cache
        return _streamed_maps(cfg, path, encoder, splits, dist, progress)
    caches = []
    for cam in cameras:
        cache, stats = build_feature_cache(
            path, cam, encoder, camera_size=task.get("camera_size"),
            source=feats_cfg["source"] if feats_cfg["cache"] else "stored",
            dtype=feats_cfg["dtype"], store_maps=feats_cfg["store_maps"], cache_root=feats_cfg.get("cache_dir"),
            batch_size=feats_cfg["batch_size"], device=dist.device, precision=cfg["precision"],
            progress=progress and dist.is_main,
        ) if feats_cfg["cache"] else (None, None)
        if stats is not None and not stats.reused and dist.is_main:
            log.info("extracted %s features: %d frames, %.1f frames/s", cam, stats.frames, stats.frames_per_second)
        caches.append(cache)
    if feats_cfg["cache"]:
        return {name: CachedFeatures(caches, steps.demos, dist.device) for name, steps in splits.items()}
    return {name: EncodedFeatures(str(path), steps, cameras, encoder, dist.device, cfg["precision"])
            for name, steps in splits.items()}


def check_head_inputs(cfg: Mapping[str, Any]) -> None:
    """Fail before any work when the head cannot get its inputs (a spatial head: bad options, no camera, no cache)."""
    if not uses_maps(cfg["policy"]["name"]):
        return
    SpatialOptions.from_config(cfg["policy"])
    if not cfg["task"]["cameras"]:
        raise ConfigError("policy=spatial needs a camera: task.cameras is empty")
    if not cfg["features"]["cache"]:
        raise ConfigError("policy=spatial reads merged S2 maps from the map cache: set features.cache=true")


def _streamed_maps(cfg: Mapping[str, Any], path: Path, encoder: torch.nn.Module, splits: dict[str, StepTable],
                   dist: DistInfo, progress: bool) -> dict[str, StepFeatures]:
    """Per split, every camera's merged S2 maps read from the map cache (built if needed) batch by batch."""
    feats_cfg, task = cfg["features"], cfg["task"]
    caches = []
    for cam in task["cameras"]:
        cache, stats = build_map_cache(
            path, cam, encoder, camera_size=task.get("camera_size"), source=feats_cfg["source"],
            cache_root=feats_cfg.get("cache_dir"), batch_size=feats_cfg["batch_size"], device=dist.device,
            precision=cfg["precision"], progress=progress and dist.is_main,
        )
        if not stats.reused and dist.is_main:
            log.info("extracted %s maps %s: %d frames, %.1f frames/s", cam, cache.shape, stats.frames,
                     stats.frames_per_second)
        caches.append(cache)
    return {name: StreamedMaps(caches, steps.demos) for name, steps in splits.items()}


def fit_normalizers(train_steps: StepTable) -> tuple[Normalizer, Normalizer]:
    """Proprio and action statistics from the training split only."""
    return Normalizer.fit(train_steps.proprio), Normalizer.fit(train_steps.actions)


def make_policy_config(cfg: Mapping[str, Any], feature_dim: int, steps: StepTable,
                       map_shape: tuple[int, ...] | None = None) -> PolicyConfig:
    """`map_shape` (cameras, C, h, w): the maps a spatial head consumes (None for pooled heads)."""
    pol = cfg["policy"]
    head_kwargs = ({k: v for k, v in pol.items() if k not in _EXECUTION_KEYS} if map_shape is None
                   else SpatialOptions.from_config(pol).head_kwargs(map_shape))
    return PolicyConfig(
        encoder=cfg["encoder"]["name"],
        weights=str(cfg["encoder"]["weights"]),
        s2={k: v for k, v in cfg["s2"].items() if v is not None},
        cameras=list(cfg["task"]["cameras"]),
        camera_size=cfg["task"].get("camera_size"),
        proprio_keys=list(cfg["task"]["proprio_keys"]),
        proprio_dim=int(steps.proprio.shape[1]),
        action_dim=int(steps.actions.shape[1]),
        feature_dim=feature_dim,
        head=pol["name"],
        head_kwargs=head_kwargs,
        execution=pol.get("execution", "receding"),
        n_action_steps=int(pol.get("n_action_steps", 1)),
        ensemble_decay=float(pol.get("ensemble_decay", 0.01)),
        precision=cfg["precision"],
        task=cfg["task"]["name"],
    )

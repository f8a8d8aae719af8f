"""The training loop, top to bottom: set up, (resume,) optimise the head on cached features, validate, checkpoint.

Run config: a `TrainRun` (s2policy/config; docs/configs.md). Everything random is a function of
(seed, step, rank) -- batches, dropout -- so `resume=true` after a kill continues on exactly the same trajectory.
"""

from __future__ import annotations

import copy
import functools
import logging
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import TrainRun, load, to_dict
from ..data.collect import default_dataset_path, ensure_dataset
from ..device import autocast
from ..errors import ConfigError
from ..distributed import all_reduce_mean, barrier, cleanup_distributed, setup_distributed
from ..look_closer import resolve_camera_models
from ..policy import Policy
from ..run_folder import POLICY_FILE, TRAIN_STATE_FILE, read_run_config
from ..s2_encoder import build_s2_encoder
from .data import batch_indices, gather_windows, load_steps
from .guard import check_step_is_finite
from .optim import EMA, lr_at, seed_step
from .setup import build_step_features, check_head_inputs, fit_normalizers, make_policy_config, split_demos
from .train_state import load_train_state, read_train_state, save_train_state
from .tracker import RunLogger

log = logging.getLogger(__name__)


def train(cfg: TrainRun | Mapping[str, Any], on_step: Callable[[int], None] | None = None) -> Path:
    """Train a policy as configured by `cfg` (a TrainRun, or a nested dict of its options: checked first); returns
    the path of the final (EMA) policy file.

    `on_step(step)` is called after every optimisation step (tests use it to simulate a kill).
    """
    cfg = load(TrainRun, cfg)
    t = cfg.train
    out_dir = Path(cfg.out_dir)
    dist = setup_distributed(cfg.device)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    resume_from = _checkpoint_to_resume(cfg, out_dir)

    # --- data and frozen features ---
    # look-closer's camera models, before any work; kept in the run config and the policy checkpoint
    cfg.s2.camera_models = resolve_camera_models(cfg.s2.encoder_kwargs(), vars(cfg.task)).get("camera_models")
    encoder = build_s2_encoder(cfg.encoder.name, cfg.encoder.weights, cfg.s2).to(dist.device)
    check_head_inputs(cfg)
    # the given dataset, or the task's demos (collected by rank 0); checked by check_dataset before any stage
    dataset = ensure_dataset(cfg.dataset, default_dataset_path(cfg.task, cfg.collect), cfg.task, cfg.collect,
                             progress=t.progress, collect_here=dist.is_main)
    barrier()  # other ranks wait for rank 0's demos
    train_demos, valid_demos = split_demos(dataset)
    proprio_keys = list(cfg.task.proprio_keys)
    splits = {"train": load_steps(str(dataset), train_demos, proprio_keys)}
    if valid_demos:
        splits["valid"] = load_steps(str(dataset), valid_demos, proprio_keys)
    features = build_step_features(cfg, dataset, encoder, splits, dist, progress=t.progress)
    proprio_norm, action_norm = fit_normalizers(splits["train"])
    for steps in splits.values():  # the head trains on normalised proprio/actions
        steps.proprio, steps.actions = proprio_norm.normalize(steps.proprio), action_norm.normalize(steps.actions)

    # --- policy, optimiser, EMA ---
    map_shape = getattr(features["train"], "map_shape", None)  # (cameras, C, h, w) for a spatial head
    val_chunk = 256 if map_shape is None else min(256, t.batch_size)  # maps: hold no more than a batch
    pcfg = make_policy_config(cfg, features["train"].dim, splits["train"], dataset, map_shape)
    policy = Policy.create(pcfg, encoder, proprio_norm, action_norm).to(dist.device)
    head = policy.head
    model = head if dist.world_size == 1 else torch.nn.parallel.DistributedDataParallel(head)
    optimizer = torch.optim.AdamW(head.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    ema = EMA(head, t.ema_decay)
    step = _restore(resume_from, cfg, policy, ema, optimizer, dist.is_main) if resume_from else 0
    checkpoint_step = step if resume_from else None  # the step of the last good checkpoint on disk
    logger = RunLogger(out_dir, enabled=dist.is_main, tensorboard=t.tensorboard)
    per_rank = t.batch_size // dist.world_size
    bar = tqdm(total=t.steps, initial=step, desc="train", unit="step", disable=not (t.progress and dist.is_main))

    # --- optimisation ---
    threads_before = torch.get_num_threads()
    if dist.device.type == "cpu":
        _set_cpu_threads(t.cpu_threads, cached=cfg.features.cache)
    while step < t.steps:
        lr = lr_at(step, t.lr, t.warmup_steps, t.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = batch_indices(step, t.batch_size, splits["train"].num_steps, cfg.seed)
        mine = idx[dist.rank * per_rank:(dist.rank + 1) * per_rank]
        batch = gather_windows(splits["train"], features["train"], mine, policy.history, policy.horizon, dist.device)
        seed_step(cfg.seed, step, dist.rank)
        head.train()
        with autocast(dist.device, cfg.precision):
            pred = model(batch["features"], batch["proprio"], batch["prev_actions"])
        loss = F.mse_loss(pred.float(), batch["targets"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(head.parameters(), t.grad_clip)
        check_step_is_finite(loss, grad_norm, step + 1, functools.partial(splits["train"].locate, mine),
                             out_dir / TRAIN_STATE_FILE, checkpoint_step, lr)
        optimizer.step()
        ema.update(head)
        step += 1
        bar.update(1)

        if step % t.log_every == 0 or step == t.steps:
            logger.scalars(step, **{"train/loss": all_reduce_mean(loss.detach()).item(), "train/lr": lr,
                                    "train/grad_norm": float(grad_norm)})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if "valid" in splits and (step % t.val_every == 0 or step == t.steps) and dist.is_main:
            logger.scalars(step, **{"valid/loss": validation_loss(policy, ema, splits["valid"], features["valid"],
                                                                  t.val_max_samples, cfg.precision, val_chunk)})
        if step % t.checkpoint_every == 0 or step == t.steps:
            if dist.is_main:
                save_train_state(out_dir / TRAIN_STATE_FILE, policy, ema, optimizer, step, to_dict(cfg))
            checkpoint_step = step
            barrier()
        if on_step is not None:
            on_step(step)
    bar.close()
    torch.set_num_threads(threads_before)

    # --- final policy: EMA weights ---
    final = out_dir / POLICY_FILE
    if dist.is_main:
        ema.copy_to(head)
        policy.save(final)
        log.info("saved policy to %s", final)
    logger.close()
    barrier()
    cleanup_distributed()
    return final


def _set_cpu_threads(setting: int | str | None, cached: bool) -> None:
    """"auto": one thread when training on cached features -- the head's ops are so small that a second thread
    mostly waits for the first (far slower on a busy machine; figures in docs/training.md); torch's default
    when the encoder runs in the loop (no-cache mode). An int sets the count; None keeps torch's default."""
    if setting == "auto":
        setting = 1 if cached else None
    if setting is not None:
        torch.set_num_threads(int(setting))


def _checkpoint_to_resume(cfg: TrainRun, out_dir: Path) -> Path | None:
    """The training state to continue from with `resume=true`; refuses to overwrite a run without it."""
    state = out_dir / TRAIN_STATE_FILE
    if not cfg.resume:
        if state.exists():
            raise ConfigError(f"{out_dir} already holds a training run ({state}); pass resume=true to continue it "
                              "or choose another out_dir")
        return None
    if not state.exists():
        log.info("resume=true but %s has no checkpoint yet: starting from step 0", out_dir)
        return None
    read_train_state(state)  # a damaged checkpoint fails here, before any feature extraction
    return state


def _restore(state: Path, cfg: TrainRun, policy: Policy, ema: EMA, optimizer: torch.optim.Optimizer,
             is_main: bool) -> int:
    """Load a training state in place; returns the step to continue from."""
    previous, current = read_run_config(state), to_dict(cfg)
    changed = sorted(k for k in set(previous) | set(current) if k != "resume" and previous.get(k) != current.get(k))
    if changed and is_main:
        log.warning("resuming %s with changed settings: %s", state, changed)
    step = load_train_state(state, policy, ema, optimizer)
    log.info("resumed %s at step %d", state, step)
    return step


@torch.no_grad()
def validation_loss(policy: Policy, ema: EMA, steps, features, max_samples: int, precision: str,
                    chunk: int = 256) -> float:
    """MSE of the EMA head on (up to `max_samples` evenly spaced) validation steps, in normalised action units,
    evaluated `chunk` steps at a time."""
    head = copy.deepcopy(policy.head)
    ema.copy_to(head)
    head.eval()
    idx = torch.linspace(0, steps.num_steps - 1, min(max_samples, steps.num_steps)).long()
    total, count = 0.0, 0
    for part in idx.split(chunk):
        batch = gather_windows(steps, features, part, policy.history, policy.horizon, policy.device)
        with autocast(policy.device, precision):
            pred = head(batch["features"], batch["proprio"], batch["prev_actions"])
        total += F.mse_loss(pred.float(), batch["targets"], reduction="sum").item()
        count += batch["targets"].numel()
    return total / count

"""Backend "ray": the same rollout loop with env workers as Ray actors and the batched policy on a Ray actor.

The driver (this process) runs `rollout.run_episodes` unchanged: each env handle forwards reset/step to its env actor
(`send_*` submits, `receive` waits, so every env steps at once), and the policy proxy forwards `reset` /
`act_batch` to one policy actor holding the policy on a GPU when the cluster has one (else on a CPU). Batches are
built exactly as the local `main` layout builds them, so per-episode results equal the local backend's for the same
seeds and worker count. Ray is imported only here (an optional extra).

Resources: an env actor reserves 1 CPU (it simulates and renders). The policy actor reserves 1 GPU, or no CPU when it
runs on one: in the lockstep loop the envs wait while the policy computes and the policy waits while they step, so
K env actors and the policy together keep K cores busy, not K + 1.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError
from .env_handles import EnvSpec, EnvWorkerError, StepResult, apply_command
from .rollout import EpisodeJob, EpisodeResult, RolloutTiming, VideoPlan, run_episodes

log = logging.getLogger(__name__)


def connect(address: str | None = None):
    """The `ray` module with a session open: the one already open in this process (e.g. started with a
    runtime_env by the caller), else `ray.init(address)`; with neither `address` nor RAY_ADDRESS that starts a Ray
    instance on this machine, which lives until this process exits."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError("eval.backend=ray needs Ray: pip install 's2policy[ray]'") from e
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        log.info("connecting to Ray at %s", address or "a new local instance")
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
    return ray


def policy_device(ray, device: str) -> str:
    """Where the policy actor runs: "cuda" when asked for (or "auto") and the cluster has a GPU, else "cpu"."""
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if device == "auto":
        return "cuda" if gpus >= 1 else "cpu"
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda"):
        if gpus < 1:
            raise ConfigError(f"eval.device={device}: the Ray cluster has no GPU (use eval.device=auto or cpu)")
        return "cuda"  # the actor sees only the GPU Ray gave it
    raise ConfigError(f"eval.device={device}: with eval.backend=ray use auto, cpu or cuda")


class EnvActor:
    """One env in a Ray worker process (created lazily, like a local env worker)."""

    def __init__(self, spec: EnvSpec):
        self.spec = spec
        self._env = None

    def apply(self, command: str, arg: Any) -> StepResult:
        if self._env is None:
            self._env = self.spec.make()
        return apply_command(self._env, command, arg)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


class PolicyActor:
    """The policy in a Ray worker: built from the policy file's bytes (the driver's path may not exist on the
    node), with the ONNX backbone when asked for (CPU only)."""

    def __init__(self, policy_bytes: bytes, device: str, threads: int, backbone: str):
        import torch

        from ..policy import Policy

        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "policy.safetensors"
            path.write_bytes(policy_bytes)
            self.policy = Policy.load(path, device=device)
        if backbone == "onnx":
            from ..runtime.onnx_backbone import use_onnx_backbone

            use_onnx_backbone(self.policy.encoder, threads=threads)

    def device(self) -> str:
        return str(self.policy.device)

    def reset(self, env_ids: Sequence[int] | int | None = None) -> None:
        self.policy.reset(env_ids)

    def act_batch(self, observations: list[dict]) -> np.ndarray:
        return self.policy.act_batch(observations)


def unwrap(ray, ref, what: str):
    """ray.get that raises the actor's own exception type (a ConfigError stays a ConfigError) or, when the actor
    died, EnvWorkerError naming it."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        raise e.as_instanceof_cause() from None
    except ray.exceptions.RayActorError as e:
        raise EnvWorkerError(f"{what} died: {e}") from e


class RayEnv:
    """Env handle for `run_episodes` whose env is a Ray actor."""

    def __init__(self, ray, actor, name: str):
        self._ray, self._actor, self.name = ray, actor, name
        self._pending = None

    def send_reset(self, seed: int) -> None:
        self._pending = self._actor.apply.remote("reset", int(seed))

    def send_step(self, action: np.ndarray) -> None:
        self._pending = self._actor.apply.remote("step", np.asarray(action))

    def receive(self) -> StepResult:
        ref, self._pending = self._pending, None
        if ref is None:
            raise RuntimeError("receive() without a pending command")
        try:
            return unwrap(self._ray, ref, self.name)
        except EnvWorkerError:
            raise
        except Exception as e:  # an env error, re-raised like a local env worker's: with the worker's name
            raise EnvWorkerError(f"{self.name}: {type(e).__name__}: {e}") from e


class RemotePolicy:
    """BatchPolicy proxy for `run_episodes`: every call runs on the policy actor."""

    def __init__(self, ray, actor):
        self._ray, self._actor = ray, actor

    def reset(self, env_ids: Sequence[int] | int | None = None) -> None:
        unwrap(self._ray, self._actor.reset.remote(env_ids), "policy actor")

    def act_batch(self, observations: Sequence[dict]) -> np.ndarray:
        return unwrap(self._ray, self._actor.act_batch.remote(list(observations)), "policy actor")


def run_on_ray(env: EnvSpec, policy_file: Path, jobs: list[EpisodeJob], workers: int, max_steps: int,
               record: Callable[[EpisodeResult], None], video: VideoPlan | None, *, address: str | None = None,
               device: str = "auto", threads: int | None = None, backbone: str = "torch",
               ) -> tuple[RolloutTiming, str]:
    """Run `jobs` on `workers` env actors with the policy batched on a policy actor; returns the timing and the
    policy actor's device."""
    ray = connect(address)
    where = policy_device(ray, device)
    if backbone == "onnx" and where != "cpu":
        raise ConfigError("eval.backbone=onnx runs the policy's encoder on a CPU, but the Ray policy actor would run "
                          "on a GPU: set eval.device=cpu or eval.backbone=torch")
    policy_cls = ray.remote(num_cpus=0, num_gpus=1 if where == "cuda" else 0)(PolicyActor)
    env_cls = ray.remote(num_cpus=1)(EnvActor)
    policy_actor = policy_cls.remote(Path(policy_file).read_bytes(), where, threads or 1, backbone)
    actors = []
    try:
        actual = unwrap(ray, policy_actor.device.remote(), "policy actor")  # load errors surface here
        actors = [env_cls.remote(env) for _ in range(max(1, min(workers, len(jobs))))]
        handles = [RayEnv(ray, a, f"env-actor-{i}") for i, a in enumerate(actors)]
        timing = run_episodes(handles, RemotePolicy(ray, policy_actor), iter(jobs), max_steps, record, video)
        ray.get([a.close.remote() for a in actors])
        return timing, actual
    finally:
        for actor in [*actors, policy_actor]:
            ray.kill(actor)

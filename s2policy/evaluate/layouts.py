"""Where the policy runs during rollouts: the three layouts evaluate() chooses between (see evaluator.py)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from .env_handles import EnvSpec, EnvWorkerError, LocalEnv, WorkerEnv
from .rollout import EpisodeJob, EpisodeResult, RolloutTiming, VideoPlan, run_episodes


@contextlib.contextmanager
def torch_threads(threads: int, device) -> Iterator[None]:
    """Run the block with `threads` torch CPU threads when the policy is on the CPU, then restore torch's value."""
    import torch

    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_policy_on_main(env: EnvSpec, policy, jobs: list[EpisodeJob], workers: int, max_steps: int,
                       record: Callable[[EpisodeResult], None], video: VideoPlan | None,
                       pipeline: bool = False) -> RolloutTiming:
    """Layouts "serial" (workers=0) and "main": this process runs the policy, env workers (if any) simulate."""
    count = max(1, min(workers, len(jobs)))
    handles = ([LocalEnv(env)] if workers == 0 else
               [WorkerEnv(env, name=f"env-worker-{i}") for i in range(count)])
    try:
        if not pipeline or len(handles) < 2:
            return run_episodes(handles, policy, iter(jobs), max_steps, record, video)
        return _run_pipelined(policy, handles, jobs, max_steps, record, video)
    finally:
        for h in handles:
            h.close()


def _run_pipelined(policy, handles: list, jobs: list[EpisodeJob], max_steps: int,
                   record: Callable[[EpisodeResult], None], video: VideoPlan | None) -> RolloutTiming:
    """Two threads, each running the rollout loop on half of the env workers with its own policy copy. Waiting on a
    pipe and torch ops both release the GIL, so one half's env step overlaps the other half's policy call."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from ..policy import Policy

    lock = threading.Lock()
    pending = iter(jobs)

    def next_job():  # the two loops share one queue of episodes
        with lock:
            return next(pending, None)

    def locked_record(result: EpisodeResult) -> None:
        with lock:
            record(result)

    halves = [handles[0::2], handles[1::2]]
    # The modules are stateless at inference and shared; each Policy object keeps its own envs' history and queues.
    twin = Policy(policy.config, policy.encoder, policy.head, policy.proprio_norm, policy.action_norm).eval()
    policies = [policy, twin]
    timing = RolloutTiming()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="rollout") as pool:
        futures = [pool.submit(run_episodes, half, pol, iter(next_job, None), max_steps, locked_record, video)
                   for half, pol in zip(halves, policies)]
        for f in futures:
            timing.merge(f.result())
    return timing


def _policy_worker(env: EnvSpec, policy_file: str, threads: int, jobs: Any, results: Any, max_steps: int,
                   video: VideoPlan | None) -> None:
    """Worker main for policy_on="workers": own CPU policy + own env, episodes pulled from a shared queue."""
    handle = None
    try:
        import torch

        from ..policy import Policy

        torch.set_num_threads(threads)
        policy = Policy.load(policy_file, device="cpu")
        handle = LocalEnv(env)
        timing = run_episodes([handle], policy, iter(jobs.get, None), max_steps,
                              lambda r: results.put(("episode", r)), video)
        results.put(("done", timing))
    except Exception as e:
        results.put(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        if handle is not None:
            handle.close()


def run_policy_in_workers(env: EnvSpec, policy_file: Path, jobs: list[EpisodeJob], workers: int, max_steps: int,
                          record: Callable[[EpisodeResult], None], video: VideoPlan | None,
                          threads: int | None = None) -> RolloutTiming:
    """Layout "workers": spawned processes each hold an env and a CPU policy copy and pull episodes from a queue."""
    ctx = mp.get_context("spawn")
    count = max(1, min(workers, len(jobs)))
    job_q, result_q = ctx.Queue(), ctx.Queue()
    for job in jobs:
        job_q.put(job)
    for _ in range(count):
        job_q.put(None)
    threads = threads or 1
    procs = [ctx.Process(target=_policy_worker, name=f"policy-worker-{i}", daemon=True,
                         args=(env, str(policy_file), threads, job_q, result_q, max_steps, video))
             for i in range(count)]
    for p in procs:
        p.start()
    timing, done = RolloutTiming(), 0
    try:
        while done < count:
            try:
                kind, payload = result_q.get(timeout=5)
            except queue.Empty:
                dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
                if dead:
                    raise EnvWorkerError(f"{dead[0].name} died (exit code {dead[0].exitcode})") from None
                continue
            if kind == "episode":
                record(payload)
            elif kind == "done":
                timing.merge(payload)
                done += 1
            else:
                raise EnvWorkerError(payload)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    return timing

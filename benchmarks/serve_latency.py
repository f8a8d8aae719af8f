"""Serving latency on this machine (JSON): the control loop with its policy in-process vs behind the policy server on
loopback, for EfficientNet-Lite0 (pretrained ImageNet weights) with and without S2, MLP head (horizon 1, so every
action needs a fresh inference: the most latency-bound case), 16 proprio -> 7 actions, one camera frame at the
largest scale's size.

Modes, each run for `--seconds` at the same target rate on an instant robot:
- `in_tick`: ControlLoop with the PolicyRunner stepped in the tick (end to end = the tick: capture -> action sent);
- `local_chunks`: ControlLoop + ChunkStream over LocalChunks (the server's computation, in-process, no network);
- `server`: ControlLoop + ChunkStream over RemotePolicy to `python -m s2policy.runtime.server` in another process on
  loopback (1 torch thread each).
End to end for the chunk modes = capture -> chunk received by the loop (`inference_ms`), and capture -> action sent
(`action_age_ms`, which also holds the wait for the next tick and zero-order holds). `policy_hz` = inferences per
second; `achieved_hz` = the loop's tick rate.

    python benchmarks/serve_latency.py --threads 1 --seconds 20 --out benchmarks/results/serve_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from runtime_latency import InstantRobot, build_policy

from s2policy.fileio import atomic_write_text
from s2policy.runtime import ChunkService, ChunkStream, ControlLoop, LocalChunks, PolicyRunner, RemotePolicy
from s2policy.runtime import SafetyConfig
from s2policy.runtime.client import ConnectionOptions
from s2policy.runtime.cadence import summarize
from s2policy.runtime.robot import now

ROOT = Path(__file__).resolve().parents[1]


class TimedPredictor:
    """Wraps a ChunkPredictor and records capture -> reply received (seconds) for every answered request."""

    def __init__(self, inner):
        self.inner, self.name, self.spec = inner, inner.name, inner.spec
        self.latencies: list[float] = []

    @property
    def available(self) -> bool:
        return self.inner.available

    def request(self, observation, observed_at, prev_action, on_reply) -> bool:
        def timed(reply):
            if reply.error is None:
                self.latencies.append(now() - observed_at)
            on_reply(reply)

        return self.inner.request(observation, observed_at, prev_action, timed)

    def close(self) -> None:
        self.inner.close()


def summary(report, seconds: float, latencies: list[float] | None) -> dict:
    out = {"achieved_hz": report.achieved_hz, "ticks": report.ticks, "policy_hz": report.inferences / seconds,
           "missed_deadlines": report.missed_deadlines, "tick_ms": report.tick_latency_ms,
           "action_age_ms": report.action_age_ms, "stages_ms": {k: v["p50"] for k, v in report.stage_ms.items()},
           "safety_events": report.safety_events}
    if latencies is not None:
        out["inference_ms"] = summarize(latencies[1:])  # the first includes connection warm-up
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench(scales: list[int], hz: float, seconds: float, threads: int | None, workdir: str) -> dict:
    policy, weights = build_policy("efficientnet_lite0", "pretrained", scales, "mlp")
    side = max(policy.encoder.img_sizes)
    ckpt = policy.save(Path(workdir) / f"lite0_{'_'.join(map(str, scales))}.safetensors")
    runner = PolicyRunner(policy, threads=threads)
    obs = runner.example_observation()
    obs["agentview"] = np.random.default_rng(0).integers(0, 256, obs["agentview"].shape, dtype=np.uint8)
    robot = InstantRobot(obs)
    # Generous staleness limits: this measures latency; the guards' own behaviour is tested elsewhere.
    safety = SafetyConfig(max_observation_age=5.0, max_action_age=10.0)
    result = {"scales": scales, "weights": weights, "frame": side, "target_hz": hz}

    report = ControlLoop(robot, runner, hz, safety=safety).run(seconds=seconds)
    result["in_tick"] = summary(report, seconds, None)

    service = ChunkService(runner)
    service.warmup()
    local = TimedPredictor(LocalChunks(service))
    report = ControlLoop(robot, ChunkStream(local), hz, safety=safety).run(seconds=seconds)
    result["local_chunks"] = summary(report, seconds, local.latencies)

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads or 1)}
    cmd = [sys.executable, "-m", "s2policy.runtime.server", "--checkpoint", str(ckpt), "--port", str(port),
           "--warmup-frame-size", str(side), str(side)] + (["--threads", str(threads)] if threads else [])
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        line = server.stdout.readline()
        if not line.startswith("serving"):
            raise RuntimeError(f"server did not start: {line!r}")
        # A long request timeout: on this loaded CPU an S2 inference can take over a second.
        remote = RemotePolicy(f"ws://127.0.0.1:{port}", ConnectionOptions(request_timeout=10.0))
        remote.wait_ready(60)
        timed = TimedPredictor(remote)
        report = ControlLoop(robot, ChunkStream(timed), hz, safety=safety).run(seconds=seconds)
        result["server"] = summary(report, seconds, timed.latencies)
        result["server"]["client_stats"] = dict(remote.stats)
    finally:
        server.terminate()
        server.wait(30)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="+", default=["1@5", "1,2@2"],
                   help="S2 scales @ control rate (Hz), e.g. 1,2@2")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per mode")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (client and server)")
    p.add_argument("--out", default="benchmarks/results/serve_latency.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for setting in args.settings:
            scales, hz = setting.split("@")
            res = bench([int(s) for s in scales.split(",")], float(hz), args.seconds, args.threads, workdir)
            results.append(res)
            print(json.dumps(res), flush=True)
    out = {"benchmark": "serve_latency", "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                                     "load_average_end": os.getloadavg()},
           "torch": torch.__version__, "threads": args.threads, "seconds_per_mode": args.seconds,
           "date": time.strftime("%Y-%m-%d"), "results": results}
    atomic_write_text(args.out, json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""On-robot latency on this machine (JSON): per-stage times, achievable control rate and loop overhead.

For each encoder and S2 scales, a policy (MLP head by default, random head weights: latency does not depend on them)
acts on one camera frame whose side is the largest scale (224 alone, 448 for S2 (1, 2), as the camera would deliver
for training) plus Panda-like proprio (16) -> action (7):
- `bare`: `Policy.act` alone (the compute the robot cannot avoid), called at the loop's rate (sleeping until each
  slot, like the loop) and back to back;
- `loop`: the same policy in `ControlLoop` with an instant robot, inference in the tick, at a rate it can hold
  (1 / (1.5 x the slowest of 5 calls)), and flat out (no idle time between ticks);
  loop overhead = loop tick latency / bare compute at the same duty cycle (target <= 1.05), medians and means.
  Idle time between ticks itself costs on a shared CPU (caches and the core go to other processes), which is why
  paced and back-to-back compute are compared separately;
- `background`: the loop with the background inference thread at twice the paced rate (tick latency vs action age);
- `onnx` (with --onnx): the same policy exported to ONNX and run on onnxruntime (`ExportedPolicy`), bare and in the
  loop, with its parity against eager.
Blocks of bare and loop ticks alternate so both see the same machine load. Achievable rate = 1 / p95 tick latency
of the paced loop (95% of ticks meet their deadline).

    python benchmarks/runtime_latency.py --out benchmarks/results/runtime_latency.json --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch

from s2policy import build_s2_encoder
from s2policy.policy import Normalizer, Policy, PolicyConfig
from s2policy.runtime import TIMESTAMP_KEY, ControlLoop, PolicyRunner, SafetyConfig
from s2policy.runtime.export import ExportedPolicy, export_policy
from s2policy.runtime.cadence import summarize

PROPRIO_DIM, ACTION_DIM = 16, 7


class InstantRobot:
    """Serves the same observation (freshly stamped) and accepts every action at no cost."""

    def __init__(self, observation: dict):
        self.observation = observation

    def get_observation(self) -> dict:
        return {**self.observation, TIMESTAMP_KEY: time.monotonic()}

    def send_action(self, action: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


def build_policy(encoder: str, weights: str, scales: list[int], head: str) -> tuple[Policy, str]:
    try:
        enc = build_s2_encoder(encoder, weights, {"scales": scales})
    except Exception as e:  # pretrained file not available offline: same architecture, same latency
        print(f"{encoder}: {weights} weights unavailable ({type(e).__name__}); timing random weights")
        weights = "random"
        enc = build_s2_encoder(encoder, weights, {"scales": scales})
    side = max(enc.img_sizes)
    config = PolicyConfig(encoder=encoder, weights=weights, s2={"scales": scales}, cameras=["agentview"],
                          proprio_keys=["proprio"], proprio_dim=PROPRIO_DIM, action_dim=ACTION_DIM,
                          feature_dim=enc.out_dim, head=head, camera_size=side)
    rng = np.random.default_rng(0)
    policy = Policy.create(config, enc, Normalizer.fit(rng.normal(size=(64, PROPRIO_DIM))),
                           Normalizer.fit(rng.normal(size=(64, ACTION_DIM))))
    return policy.eval(), weights


def time_calls(fn, obs: dict, n: int, hz: float | None = None) -> list[float]:
    """Seconds of `n` calls of fn(obs), back to back, or started on `hz` slots with ControlLoop's schedule (sleep
    until the slot; a late call skips the slots already past), so paced calls idle exactly as the loop does."""
    out = []
    slot = time.monotonic()
    for _ in range(n):
        if hz:
            time.sleep(max(slot - time.monotonic(), 0.0))
        t0 = time.perf_counter()
        fn(obs)
        out.append(time.perf_counter() - t0)
        if hz:
            slot += 1.0 / hz
            late = time.monotonic() - slot
            if late > 0:
                slot += (int(late * hz) + 1) / hz
    return out


def holdable_rate(fn, obs: dict) -> float:
    """A rate the policy can hold: 1 / (1.5 x the slowest of 5 calls)."""
    return 1.0 / (1.5 * max(time_calls(fn, obs, 5)))


def loop_ticks(robot: InstantRobot, controller, hz: float, n: int) -> ControlLoop:
    # Staleness limits scale with the period; flat out (hz 1e4) they would flag every action as too old.
    loop = ControlLoop(robot, controller, hz, safety=SafetyConfig(max_observation_age=1.0, max_action_age=10.0))
    loop.run(steps=n)
    return loop


def ratio(a: dict, b: dict) -> dict:
    return {k: a[k] / b[k] for k in ("p50", "mean")}


def bench_onnx(policy: Policy, obs: dict, ticks: int, blocks: int, workdir: str, threads: int | None) -> dict:
    manifest = export_policy(policy, workdir, "onnx", parity_steps=3)
    exported = ExportedPolicy.load(workdir, threads=threads)
    hz = holdable_rate(exported.act, obs)
    bare, loops = [], []
    for _ in range(blocks):
        bare += time_calls(exported.act, obs, ticks, hz)
        loops.append(loop_ticks(InstantRobot(obs), exported, hz, ticks))
    b, t = summarize(bare), summarize([x for lp in loops for x in lp.timing.tick_latency])
    return {"parity_max_abs_diff": manifest.parity_max_abs_diff, "paced_hz": hz, "bare_paced_ms": b,
            "loop_paced_tick_ms": t, "loop_overhead_paced": ratio(t, b), "achievable_hz_in_tick": 1e3 / t["p95"]}


def bench_config(encoder: str, weights: str, scales: list[int], head: str, ticks: int, blocks: int,
                 onnx_dir: str | None = None, threads: int | None = None) -> dict:
    policy, weights = build_policy(encoder, weights, scales, head)
    side = policy.config.camera_size
    rng = np.random.default_rng(1)
    obs = {"agentview": rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8),
           "proprio": rng.normal(size=PROPRIO_DIM).astype(np.float32)}
    runner = PolicyRunner(copy.deepcopy(policy), warmup_steps=3, example_observation=obs)  # hooks on the copy only
    act = torch.inference_mode()(policy.act)
    hz = holdable_rate(act, obs)
    robot = InstantRobot(obs)
    bare_paced: list[float] = []
    bare_flat: list[float] = []
    paced: list[ControlLoop] = []
    flat: list[ControlLoop] = []
    for _ in range(blocks):
        bare_paced += time_calls(act, obs, ticks, hz)
        paced.append(loop_ticks(robot, runner, hz, ticks))
        bare_flat += time_calls(act, obs, ticks)
        flat.append(loop_ticks(robot, runner, 1e4, ticks))  # every slot already past: no idle time

    def ticks_of(loops: list[ControlLoop]) -> dict:
        return summarize([x for lp in loops for x in lp.timing.tick_latency])

    stages = {s: summarize([x for lp in paced for x in lp.timing.stages[s]]) for s in paced[0].timing.stages}
    background = ControlLoop(robot, runner, 2 * hz, background=True).run(steps=2 * ticks)
    bp, bf, lp_, lf = summarize(bare_paced), summarize(bare_flat), ticks_of(paced), ticks_of(flat)
    onnx = bench_onnx(policy, obs, ticks, blocks, onnx_dir, threads) if onnx_dir else None
    return {
        "encoder": encoder, "weights": weights, "scales": scales, "frame": [side, side], "head": head,
        "crops_per_frame": policy.encoder.crops_per_frame((side, side)),
        "gmacs_per_frame": round(policy.encoder.gmacs((side, side)), 3),
        "paced_hz": hz, "bare_paced_ms": bp, "loop_paced_tick_ms": lp_, "stage_ms": stages,
        "bare_back_to_back_ms": bf, "loop_flat_out_tick_ms": lf,
        "loop_overhead_paced": ratio(lp_, bp), "loop_overhead_back_to_back": ratio(lf, bf),
        "achievable_hz_in_tick": 1e3 / lp_["p95"],
        "paced_missed_deadlines": sum(lp.timing.missed_deadlines for lp in paced),
        "background": {"target_hz": 2 * hz, "achieved_hz": background.achieved_hz,
                       "tick_ms": background.tick_latency_ms, "action_age_ms": background.action_age_ms,
                       "inferences": background.inferences, "ticks": background.ticks},
        "onnx": onnx,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoders", nargs="+", default=["efficientnet_lite0", "r3m_resnet18"])
    p.add_argument("--scales", nargs="+", default=["1", "1,2"], help="comma-separated S2 scales per setting")
    p.add_argument("--weights", default="pretrained")
    p.add_argument("--head", default="mlp", choices=["mlp", "transformer"])
    p.add_argument("--ticks", type=int, default=10, help="ticks per block")
    p.add_argument("--blocks", type=int, default=3, help="alternating bare / loop blocks")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--onnx", action="store_true", help="also export to ONNX and time it on onnxruntime")
    p.add_argument("--out", default="benchmarks/results/runtime_latency.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for encoder in args.encoders:
        for scales in args.scales:
            s = [int(v) for v in scales.split(",")]
            with tempfile.TemporaryDirectory() as tmp:
                r = bench_config(encoder, args.weights, s, args.head, args.ticks, args.blocks,
                                 tmp if args.onnx else None, args.threads)
            results.append(r)
            o, f = r["loop_overhead_paced"], r["loop_overhead_back_to_back"]
            print(f"{encoder:>20} S2{tuple(s)} {r['frame'][0]}px: bare p50 {r['bare_paced_ms']['p50']:.1f} ms "
                  f"(back to back {r['bare_back_to_back_ms']['p50']:.1f}), loop p50 "
                  f"{r['loop_paced_tick_ms']['p50']:.1f} ms, overhead paced {o['p50']:.3f} / {o['mean']:.3f} "
                  f"back-to-back {f['p50']:.3f} / {f['mean']:.3f} (p50 / mean), "
                  f"achievable {r['achievable_hz_in_tick']:.1f} Hz"
                  + (f"; onnx bare p50 {r['onnx']['bare_paced_ms']['p50']:.1f} ms" if r["onnx"] else ""), flush=True)
    out = {
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version(),
                    "load_average_1m_at_end": os.getloadavg()[0]},
        "settings": vars(args), "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    from s2policy.fileio import atomic_write_text

    atomic_write_text(args.out, json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

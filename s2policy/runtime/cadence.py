"""Timing records of a control-loop run and the cadence report built from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Stages in the order they happen in one control step. preprocess covers everything in the policy call that is not a
#: network: parsing, uint8 -> float, S2 resizing and cropping, normalisation, the action-chunk queue.
STAGES = ("observe", "preprocess", "encode", "head", "act")
#: Extra stages when the policy is served over the network (one sample per reply): request = observation capture ->
#: request written to the socket; network = round trip minus the server's time (both directions); server_io = the
#: server's decoding, checking and reply encoding; queue = waiting on the server for its inference thread / batch.
REMOTE_STAGES = ("request", "network", "server_io", "queue")
PERCENTILES = (50, 95, 99)


@dataclass
class StageTimes:
    """Seconds spent in the policy's stages during one `act` call."""

    preprocess: float = 0.0
    encode: float = 0.0
    head: float = 0.0

    @property
    def total(self) -> float:
        return self.preprocess + self.encode + self.head


def summarize(seconds: list[float] | np.ndarray) -> dict[str, float]:
    """{"mean", "p50", "p95", "p99", "max"} in milliseconds (NaN when there are no samples)."""
    x = np.asarray(seconds, dtype=np.float64) * 1e3
    if x.size == 0:
        return {k: float("nan") for k in ("mean", "p50", "p95", "p99", "max")}
    out = {"mean": float(x.mean())}
    out |= {f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(x, PERCENTILES))}
    out["max"] = float(x.max())
    return out


@dataclass
class TimingLog:
    """Raw samples collected by the loop (seconds). Per-tick lists have one entry per tick; policy stages have one
    entry per inference (in background mode inferences and ticks are decoupled)."""

    tick_start: list[float] = field(default_factory=list)
    tick_latency: list[float] = field(default_factory=list)  # tick start -> send_action returned
    action_age: list[float] = field(default_factory=list)  # observation capture -> send_action returned
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    missed_deadlines: int = 0
    skipped_slots: int = 0
    inferences: int = 0

    def add_policy_times(self, times: StageTimes) -> None:
        self.inferences += 1
        for stage in ("preprocess", "encode", "head"):
            self.stages[stage].append(getattr(times, stage))

    def add_remote_times(self, seconds: dict[str, float]) -> None:
        """One reply's network-side stages ({stage in REMOTE_STAGES: seconds})."""
        for stage, value in seconds.items():
            self.stages.setdefault(stage, []).append(value)


@dataclass
class CadenceReport:
    """How well a run kept its rate. Latencies are in milliseconds."""

    target_hz: float
    achieved_hz: float
    ticks: int
    seconds: float
    missed_deadlines: int
    skipped_slots: int
    inferences: int
    background: bool  # the tick does not wait for inference (background thread or a chunk stream)
    tick_latency_ms: dict[str, float]
    action_age_ms: dict[str, float]
    stage_ms: dict[str, dict[str, float]]
    safety_events: dict[str, int]
    stop_reason: str
    extra: dict[str, Any] = field(default_factory=dict)
    mode: str = ""  # how actions were produced, e.g. "inference in the tick", "action chunks from ws://..."

    @classmethod
    def from_log(cls, log: TimingLog, target_hz: float, background: bool, safety_events: dict[str, int],
                 stop_reason: str, extra: dict[str, Any] | None = None, mode: str = "") -> "CadenceReport":
        starts = log.tick_start
        span = starts[-1] - starts[0] if len(starts) > 1 else 0.0
        return cls(
            target_hz=target_hz,
            achieved_hz=(len(starts) - 1) / span if span > 0 else float("nan"),
            ticks=len(starts),
            seconds=(starts[-1] - starts[0] + (log.tick_latency[-1] if log.tick_latency else 0.0)) if starts else 0.0,
            missed_deadlines=log.missed_deadlines,
            skipped_slots=log.skipped_slots,
            inferences=log.inferences,
            background=background,
            tick_latency_ms=summarize(log.tick_latency),
            action_age_ms=summarize(log.action_age),
            stage_ms={s: summarize(v) for s, v in log.stages.items()},
            safety_events=dict(safety_events),
            stop_reason=stop_reason,
            extra=dict(extra or {}),
            mode=mode or ("background inference" if background else "inference in the tick"),
        )

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def format(self) -> str:
        """A human-readable table (what the CLI prints)."""
        mode = self.mode or ("background inference" if self.background else "inference in the tick")
        lines = [
            f"cadence: {self.achieved_hz:.2f} Hz achieved of {self.target_hz:g} Hz target ({mode}), "
            f"{self.ticks} ticks in {self.seconds:.1f} s, {self.inferences} inferences; stopped: {self.stop_reason}",
            f"missed deadlines: {self.missed_deadlines} ({100 * self.missed_deadlines / max(self.ticks, 1):.1f}% "
            f"of ticks), skipped slots: {self.skipped_slots}",
            f"{'latency (ms)':<28}{'mean':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}",
        ]
        rows = [("tick (observe->sent)", self.tick_latency_ms), ("action age (capture->sent)", self.action_age_ms)]
        order = ["observe", *(s for s in REMOTE_STAGES if s in self.stage_ms), *STAGES[1:]]
        rows += [(f"  {s}", self.stage_ms[s]) for s in order]
        for name, st in rows:
            lines.append(f"{name:<28}" + "".join(f"{st[k]:>8.1f}" for k in ("mean", "p50", "p95", "p99", "max")))
        events = ", ".join(f"{k}={v}" for k, v in sorted(self.safety_events.items())) or "none"
        lines.append(f"safety events: {events}")
        lines += [f"{k}: {v}" for k, v in self.extra.items()]
        return "\n".join(lines)

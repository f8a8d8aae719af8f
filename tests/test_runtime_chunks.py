"""The action-chunk queue: actions timed from their observation, late ones dropped, hold, cross-fade on switching;
and ChunkStream in the loop with a scripted predictor (no network, no torch)."""

import threading

import numpy as np
import pytest

from s2policy.errors import ConfigError
from s2policy.runtime import ActionQueue, ChunkReply, ChunkStream, ControlLoop, SafetyConfig
from s2policy.runtime.protocol import PolicySpec

from .test_runtime_support import FakeRobot

P = 0.1  # control period


def chunk(*values):
    return np.array([[v, -v] for v in values], np.float32)


def test_actions_are_due_one_period_apart_from_capture():
    q = ActionQueue(P)
    q.add(chunk(0, 1, 2, 3), observed_at=10.0, now=10.0)
    assert q.take(10.0).action[0] == 0
    assert q.take(10.1).action[0] == 1
    item = q.take(10.2 + 0.04)  # within half a period of the slot
    assert item.action[0] == 2 and item.due_at == pytest.approx(10.2) and item.observed_at == 10.0
    assert q.ahead(10.24) == 1 and q.dropped_late == 0


def test_late_actions_are_dropped_and_the_newest_due_one_is_sent():
    q = ActionQueue(P)
    q.add(chunk(0, 1, 2, 3), observed_at=10.0, now=10.23)  # arrived 230 ms after capture
    item = q.take(10.23)
    assert item.action[0] == 2 and q.dropped_late == 2  # actions for 10.0 and 10.1 were never sent
    assert q.take(10.33).action[0] == 3


def test_the_last_action_is_held_when_nothing_new_is_due():
    q = ActionQueue(P)
    assert q.take(5.0) is None
    q.add(chunk(7), observed_at=5.0, now=5.05)
    first = q.take(5.1)
    assert first.action[0] == 7
    assert q.take(5.4) is first  # zero-order hold; the guard judges it by due_at (5.0)
    q.clear()
    assert q.take(5.5) is None


def test_a_new_chunk_replaces_the_plan_and_fades_in_by_timestamp():
    q = ActionQueue(P, blend_steps=2)
    q.add(chunk(0, 0, 0, 0, 0, 0), observed_at=0.0, now=0.0)
    q.take(0.0)
    q.take(0.1)
    # Planned at 0.1 (slots 0.1 .. 0.6); it arrives at 0.15: its first future action is for 0.2.
    q.add(chunk(9, 9, 9, 9, 9, 9), observed_at=0.1, now=0.15)
    got = [q.take(0.2 + i * P).action[0] for i in range(5)]
    w = [2 / 3, 1 / 3]  # old-plan weights for the first two overlapping future slots
    np.testing.assert_allclose(got, [9 * (1 - w[0]), 9 * (1 - w[1]), 9, 9, 9], rtol=1e-6)
    assert q.blended == 2


def test_without_blending_the_new_chunk_wins_outright():
    q = ActionQueue(P, blend_steps=0)
    q.add(chunk(0, 0, 0, 0), observed_at=0.0, now=0.0)
    q.take(0.0)
    q.add(chunk(5, 6, 7), observed_at=0.1, now=0.12)
    assert [q.take(t).action[0] for t in (0.1, 0.2, 0.3)] == [5, 6, 7]


def test_queue_rejects_bad_settings():
    with pytest.raises(ConfigError, match="period"):
        ActionQueue(0)
    with pytest.raises(ConfigError, match="blend_steps"):
        ActionQueue(P, blend_steps=-1)


class ScriptedPredictor:
    """Answers each request after `delay` seconds (in a timer thread) with `make(observed_at)` or an error."""

    name = "a scripted predictor"

    def __init__(self, horizon=4, n_action_steps=2, delay=0.02, make=None):
        self.spec = PolicySpec(cameras=[], proprio_keys=["proprio"], proprio_dim=5, action_dim=3, horizon=horizon,
                               n_action_steps=n_action_steps)
        self.delay, self.available, self.requests, self.closed = delay, True, [], False
        self.make = make or (lambda i: ChunkReply(np.full((horizon, 3), 0.5, np.float32), 0.0, {"network": 0.001}))

    def request(self, observation, observed_at, prev_action, on_reply):
        if not self.available:
            return False
        self.requests.append((observed_at, prev_action))
        reply = self.make(len(self.requests))
        reply = ChunkReply(reply.actions, observed_at, reply.times, reply.error, reply.detail)
        threading.Timer(self.delay, on_reply, args=(reply,)).start()
        return True

    def close(self):
        self.closed = True


def test_chunk_stream_requests_before_the_queue_runs_dry():
    predictor = ScriptedPredictor(horizon=8, n_action_steps=4, delay=0.01)
    robot = FakeRobot()
    report = ControlLoop(robot, ChunkStream(predictor), hz=20, safety=SafetyConfig(low=-1, high=1)).run(steps=40)
    # About one request per 4 ticks (threshold horizon - n_action_steps = 4 actions ahead); load may shift a few.
    assert 6 <= len(predictor.requests) <= 20
    assert report.safety_events.get("no_action_yet", 0) <= 3  # only before the first chunk arrived
    assert all(np.allclose(a, 0.5) for a in robot.sent[5:-1])
    assert report.stage_ms["network"]["p50"] == pytest.approx(1.0)
    assert predictor.requests[-1][1] is not None  # prev_action: what the robot executes meanwhile
    assert predictor.closed and report.mode == "action chunks from a scripted predictor"


def test_chunk_stream_errors_and_a_lost_predictor_give_the_fault_action():
    def make(i):
        if i % 2 == 0:
            return ChunkReply(None, 0.0, {}, "bad_reply", "garbage")
        return ChunkReply(np.full((1, 3), 0.5, np.float32), 0.0, {})

    predictor = ScriptedPredictor(horizon=1, n_action_steps=1, delay=0.005, make=make)
    robot = FakeRobot()
    loop = ControlLoop(robot, ChunkStream(predictor), hz=50, safety=SafetyConfig(low=-1, high=1))
    threading.Timer(0.3, lambda: setattr(predictor, "available", False)).start()
    report = loop.run(steps=30)
    assert report.safety_events["bad_reply"] >= 3
    assert report.safety_events["server_unavailable"] >= 5
    # Once the predictor is gone, nothing but the safe action (zeros) reaches the robot.
    tail = robot.sent[-5:]
    assert all(np.array_equal(a, np.zeros(3)) for a in tail)

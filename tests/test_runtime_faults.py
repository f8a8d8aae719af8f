"""Faults between the robot and the policy server, on loopback with the simulated robot and tiny random policies:
the server killed mid-run and restarted, a slow jittery link, a server answering garbage. Whatever happens, only
finite, in-bounds actions reach the robot, the loop keeps its rate, and a lost server means the safe action."""

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

from s2policy.runtime import ChunkStream, ControlLoop, RemotePolicy, SafetyConfig
from s2policy.runtime.client import ConnectionOptions

from .serve_support import DelayProxy, running_server, tiny_service, wire_array
from .test_runtime_support import write_tiny_checkpoint

pytest.importorskip("envs")  # first: it picks the headless GL backend before mujoco loads
pytestmark = pytest.mark.simulator  # every test drives the simulated robot

HZ = 10.0
ROOT = Path(__file__).resolve().parents[1]


class RecordingRobot:
    """The shared simulated robot, recording (time, action) of every command; close() leaves it running."""

    def __init__(self, sim):
        self.sim, self.sent = sim, []
        self.action_low, self.action_high = sim.action_low, sim.action_high

    def get_observation(self):
        return self.sim.get_observation()

    def send_action(self, action):
        self.sent.append((time.monotonic(), np.array(action, copy=True)))
        self.sim.send_action(action)

    def close(self):
        pass

    def check_all_sent(self):
        actions = np.array([a for _, a in self.sent])
        assert np.isfinite(actions).all()
        assert (actions >= self.action_low).all() and (actions <= self.action_high).all()


@pytest.fixture(scope="module")
def sim():
    from s2policy.runtime import SimRobot

    robot = SimRobot.for_task("lift", camera_size=48, sim_hz=20)
    yield robot
    robot.close()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("faults") / "policy.safetensors", head="transformer",
                                 proprio_dim=16, action_dim=7, task="lift")


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Servers and loops share this 2-core machine: one torch thread each."""


def run_in_thread(loop: ControlLoop) -> threading.Thread:
    thread = threading.Thread(target=loop.run, kwargs={"seconds": 120}, daemon=True)
    thread.start()
    return thread


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def policy_actions_since(robot: RecordingRobot, t: float) -> int:
    return sum(1 for s, a in robot.sent if s > t and np.any(a != 0))


# --- the server process is killed, then comes back ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server_process(ckpt: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "s2policy.runtime.server", "--checkpoint", str(ckpt), "--port",
                             str(port), "--threads", "1", "--warmup-frame-size", "48", "48"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()  # blocks until the server listens (or exits)
    assert line.startswith("serving "), f"server did not start: {line!r} (exit {proc.poll()})"
    return proc


@pytest.mark.subprocess
def test_server_killed_mid_run_safe_action_then_reconnect(ckpt, sim):
    port = free_port()
    proc = start_server_process(ckpt, port)
    robot = RecordingRobot(sim)
    remote = RemotePolicy(f"ws://127.0.0.1:{port}", ConnectionOptions(reconnect_min=0.05, reconnect_max=0.2))
    try:
        remote.wait_ready(60)
        loop = ControlLoop(robot, ChunkStream(remote), HZ, safety=SafetyConfig(low=sim.action_low,
                                                                              high=sim.action_high))
        thread = run_in_thread(loop)
        wait_for(lambda: policy_actions_since(robot, 0) >= 5, 60, "the policy's first actions")
        killed = time.monotonic()
        proc.kill()
        proc.wait(30)
        wait_for(lambda: remote.disconnected_at is not None, 5, "the client to notice")
        lost = remote.disconnected_at
        time.sleep(5 / HZ)
        after = [(t, a) for t, a in robot.sent if t > lost]
        # The first tick after the loss sends the safe action (zeros), and every tick until reconnection does.
        assert after and after[0][0] - lost <= 1 / HZ + 0.05, after[:2]
        assert all(np.array_equal(a, np.zeros(7)) for _, a in after)
        assert lost - killed < 1.0  # the kernel closed the socket; no timeout was needed

        # The server returns on the same address (in this process: a second process start would only cost time).
        with running_server(tiny_service(ckpt), port=port):
            back = time.monotonic()
            wait_for(lambda: policy_actions_since(robot, back) >= 3, 60, "actions from the restarted server")
            loop.stop()
            thread.join(30)
    finally:
        proc.kill()
        proc.wait(30)
        remote.close()
    report = loop.report
    assert remote.stats["connects"] == 2 and remote.stats["disconnects"] == 1
    assert report.safety_events["server_unavailable"] >= 4
    robot.check_all_sent()


# --- a slow, jittery link ----------------------------------------------------------------------------------------
def test_delay_and_jitter_drop_stale_actions_and_keep_the_rate(ckpt, sim):
    robot = RecordingRobot(sim)
    with running_server(tiny_service(ckpt)) as server:
        proxy = DelayProxy(server.port, delay=0.08, jitter=0.04)  # each way: round trip 80-240 ms + compute
        remote = RemotePolicy(f"ws://127.0.0.1:{proxy.port}")
        try:
            remote.wait_ready(30)
            stream = ChunkStream(remote, blend_steps=1)
            safety = SafetyConfig(low=sim.action_low, high=sim.action_high, max_action_age=0.6)
            report = ControlLoop(robot, stream, HZ, safety=safety).run(seconds=4)
        finally:
            remote.close()
            proxy.close()
    assert report.achieved_hz >= 0.9 * HZ and report.missed_deadlines <= 0.1 * report.ticks
    assert report.tick_latency_ms["p50"] < 30  # the tick never waits for the network
    assert report.inferences >= 5
    assert report.stage_ms["network"]["p50"] >= 120  # the proxy's delay is measured as network time
    assert report.safety_events["dropped_late"] >= report.inferences  # each chunk's first actions came too late
    assert report.safety_events.get("stale_action", 0) <= 2
    robot.check_all_sent()


# --- a server that answers garbage -------------------------------------------------------------------------------
class GarbageServer:
    """Says a correct hello for the lift policy, then answers request k with reply `k % len(REPLIES)`."""

    def __init__(self):
        import websockets.asyncio.server as ws_server

        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def handle(ws):
            hello = {"v": 1, "type": "hello", "server": "garbage/0", "policy": {
                "cameras": ["agentview"], "proprio_keys": ["proprio"], "proprio_dim": 16, "action_dim": 7,
                "horizon": 4, "history": 4, "n_action_steps": 2}}
            await ws.send(msgpack.packb(hello))
            k = 0
            async for frame in ws:
                rid = msgpack.unpackb(frame, raw=False)["id"]
                reply = self.reply(k, rid)
                k += 1
                if reply is not None:
                    await ws.send(reply)

        async def serve():
            self.server = await ws_server.serve(handle, "127.0.0.1", 0, compression=None)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self.loop)
        assert ready.wait(10)

    @staticmethod
    def reply(k: int, rid: int):
        def actions(a, **extra):
            return msgpack.packb({"v": 1, "type": "actions", "id": rid, "actions": wire_array(a), **extra})

        replies = [
            b"\x93\x01",  # truncated msgpack
            "text, not binary",
            actions(np.full((4, 7), np.nan, np.float32)),
            actions(np.zeros((5, 7), np.float32)),  # longer than the horizon
            actions(np.zeros((4, 6), np.float32)),  # wrong action size
            actions(np.ones((4, 7), np.int32)),  # not floats
            msgpack.packb({"v": 1, "type": "actions", "id": rid, "actions": [1, 2, 3]}),
            msgpack.packb({"v": 1, "type": "actions", "id": rid + 1000, "actions": wire_array(np.zeros((4, 7)))}),
            None,  # never answered: the client times out
            actions(np.full((4, 7), 50.0, np.float32), timing={"server_ms": "fast"}),  # finite but out of bounds
            actions(np.full((4, 7), 0.5, np.float32)),  # a good reply
        ]
        return replies[k % len(replies)]

    def close(self):
        async def shut():
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_garbage_from_the_server_never_reaches_the_robot(sim):
    robot = RecordingRobot(sim)
    server = GarbageServer()
    remote = RemotePolicy(f"ws://127.0.0.1:{server.port}", ConnectionOptions(request_timeout=0.25))
    try:
        remote.wait_ready(10)
        safety = SafetyConfig(low=sim.action_low, high=sim.action_high)
        report = ControlLoop(robot, ChunkStream(remote), HZ, safety=safety).run(seconds=4)
    finally:
        remote.close()
        server.close()
    robot.check_all_sent()
    events = report.safety_events
    assert events["bad_reply"] >= 6 and events["reply_timeout"] >= 1 and events["clipped"] >= 1
    assert remote.stats["late_replies"] >= 1  # the reply with an id nobody asked for was ignored
    sent = np.array([a for _, a in robot.sent])
    assert np.isclose(sent, 0.5).all(axis=1).any()  # the good replies were executed
    assert report.achieved_hz >= 0.9 * HZ

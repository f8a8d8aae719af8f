"""The thin robot client: the control loop on the robot's computer, its policy served from elsewhere. No torch:
numpy, msgpack and websockets only (a test runs this module with torch imports blocked).

    python -m s2policy.runtime.client --server ws://gpu-box:8000 --robot sim --hz 10 --seconds 30

`RemotePolicy` is the connection (a `ChunkPredictor`): it connects, reads the server's hello (the policy's
cameras, proprio, action size and horizon), sends one request at a time for the loop's `ChunkStream`, checks every
reply (garbage, a wrong shape or a non-finite value is an event, never an action), times out unanswered requests and
reconnects with backoff whenever the connection drops. The loop, its chunk queue, guards and report are the same
code that runs in-process (`ControlLoop` + `ChunkStream`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import ConfigError, S2PolicyError
from .cli_args import add_loop_arguments, print_report, safety_config, setup_logging
from .inference import ChunkReply, ChunkStream
from .protocol import DEFAULT_MAX_MESSAGE_BYTES, PolicySpec, ProtocolError, pack, request_id, unpack
from .robot import EPISODE_KEY, TIMESTAMP_KEY, now
from .safety import BAD_REPLY, REPLY_TIMEOUT, SERVER_ERROR, SERVER_UNAVAILABLE

log = logging.getLogger(__name__)


@dataclass
class ConnectionOptions:
    """How the client talks to the server (seconds). reconnect: first and longest wait between attempts."""

    open_timeout: float = 2.0
    request_timeout: float = 2.0
    reconnect_min: float = 0.05
    reconnect_max: float = 1.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    def __post_init__(self) -> None:
        if min(self.open_timeout, self.request_timeout, self.reconnect_min) <= 0 \
                or self.reconnect_max < self.reconnect_min:
            raise ConfigError(f"connection timeouts must be positive and reconnect_max >= reconnect_min: {self}")


class RemotePolicy:
    """A policy server reached over WebSocket, as a `ChunkPredictor` for `ChunkStream`.

    The connection lives in a background thread with its own asyncio loop. `wait_ready(timeout)` blocks until the
    first hello (then `spec` is known). If a later server announces a different policy interface, the client refuses
    it and keeps retrying (the robot was set up for the first one).
    """

    def __init__(self, url: str, options: ConnectionOptions | None = None):
        self.url = url
        self.name = url
        self.options = options or ConnectionOptions()
        self.spec: PolicySpec | None = None  # from the first hello (`wait_ready`)
        self.disconnected_at: float | None = None  # monotonic time the last connection was found lost
        self.stats = {"connects": 0, "disconnects": 0, "requests": 0, "replies": 0, "bad_replies": 0,
                      "server_errors": 0, "timeouts": 0, "late_replies": 0}
        self._connected = threading.Event()
        self._ready = threading.Event()
        self._closing = False
        self._ws: Any = None
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[float, float, Callable[[ChunkReply], None], Any]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),),
                                        name="s2policy-client", daemon=True)
        self._thread.start()

    # --- ChunkPredictor ----------------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return self._connected.is_set()

    def request(self, observation: Mapping[str, Any], observed_at: float, prev_action: np.ndarray | None,
                on_reply: Callable[[ChunkReply], None]) -> bool:
        """Send one observation (only the policy's inputs are sent); False if not connected."""
        if not self._connected.is_set() or self.spec is None:
            return False
        message: dict[str, Any] = {"type": "infer", "id": next(self._ids),
                                   "observation": self.spec.select_inputs(observation)}
        if observation.get(EPISODE_KEY) is not None:
            message["episode"] = int(observation[EPISODE_KEY])
        if prev_action is not None:
            message["prev_action"] = np.asarray(prev_action, np.float32)
        self.stats["requests"] += 1
        asyncio.run_coroutine_threadsafe(self._send(message, observed_at, on_reply), self._loop)
        return True

    def wait_ready(self, timeout: float) -> PolicySpec:
        """Block until the server's hello arrived (ConnectionError after `timeout` seconds)."""
        if not self._ready.wait(timeout):
            raise ConnectionError(f"no policy server answered at {self.url} within {timeout:g} s")
        return self.spec  # type: ignore[return-value]

    def close(self) -> None:
        self._closing = True
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        self._thread.join(timeout=5)

    # --- network thread ----------------------------------------------------------------------------------------
    async def _main(self) -> None:
        from websockets.asyncio.client import connect

        delay = self.options.reconnect_min
        while not self._closing:
            try:
                async with connect(self.url, compression=None, open_timeout=self.options.open_timeout,
                                   max_size=self.options.max_message_bytes, proxy=None,
                                   ping_interval=2.0, ping_timeout=4.0) as ws:
                    await self._hello(ws)
                    self._ws = ws
                    self.stats["connects"] += 1
                    delay = self.options.reconnect_min
                    self._connected.set()
                    log.info("connected to the policy server at %s", self.url)
                    await self._read(ws)
            except asyncio.CancelledError:
                break
            except Exception as e:  # refused, reset, timed out, bad hello: all mean "try again"
                if not self._closing and (self._connected.is_set() or self.stats["connects"] == 0):
                    log.warning("policy server %s: %s: %s", self.url, type(e).__name__, e)
            self._lost("connection lost")
            if not self._closing:
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    break
                delay = min(2 * delay, self.options.reconnect_max)

    async def _hello(self, ws: Any) -> None:
        message = unpack(await asyncio.wait_for(ws.recv(), self.options.open_timeout), self.options.max_message_bytes)
        if message["type"] != "hello":
            raise ProtocolError(BAD_REPLY, f"first message is {message['type']!r}, expected 'hello'")
        spec = PolicySpec.from_dict(message.get("policy"))
        if self.spec is not None and spec != self.spec:
            raise ProtocolError(BAD_REPLY, f"the server now serves a different policy ({spec}); expected {self.spec}")
        self.spec = spec
        self._ready.set()

    async def _read(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for frame in ws:
                self._reply(frame, now())
        except ConnectionClosed:
            pass

    def _reply(self, frame: bytes | str, received: float) -> None:
        try:
            message = unpack(frame, self.options.max_message_bytes)
        except ProtocolError as e:
            self._garbage(f"undecodable reply: {e}")
            return
        rid = request_id(message)
        if rid not in self._pending:
            self.stats["late_replies"] += 1  # answered after its timeout, or never asked: ignored
            return
        sent, observed_at, on_reply, timer = self._pending.pop(rid)
        timer.cancel()
        if message["type"] == "error":
            self.stats["server_errors"] += 1
            detail = f"{message.get('code')}: {str(message.get('message'))[:300]}"
            on_reply(ChunkReply(None, observed_at, {}, SERVER_ERROR, detail))
            return
        try:
            if message["type"] != "actions":
                raise ProtocolError(BAD_REPLY, f"reply type {message['type']!r}")
            actions = self.spec.check_actions(message.get("actions"))
        except ProtocolError as e:
            self.stats["bad_replies"] += 1
            on_reply(ChunkReply(None, observed_at, {}, BAD_REPLY, str(e)))
            return
        self.stats["replies"] += 1
        on_reply(ChunkReply(actions, observed_at, _stage_times(message.get("timing"), received - sent)))

    def _garbage(self, detail: str) -> None:
        """A reply we cannot attribute fails every request in flight (the loop is waiting for one of them)."""
        self.stats["bad_replies"] += 1
        self._fail_pending(BAD_REPLY, detail)

    def _fail_pending(self, kind: str, detail: str) -> None:
        for rid in list(self._pending):
            _, observed_at, on_reply, timer = self._pending.pop(rid)
            timer.cancel()
            on_reply(ChunkReply(None, observed_at, {}, kind, detail))

    async def _send(self, message: dict[str, Any], observed_at: float, on_reply: Callable[[ChunkReply], None]) -> None:
        rid = message["id"]
        sent = now()
        timer = self._loop.call_later(self.options.request_timeout, self._expire, rid)
        # Registered before sending: a fast server may answer before send() returns.
        self._pending[rid] = (sent, observed_at, _with_request_time(on_reply, sent - observed_at), timer)
        try:
            await self._ws.send(pack(message))
        except Exception as e:  # the connection went between the check and the send
            if self._pending.pop(rid, None) is not None:
                timer.cancel()
                on_reply(ChunkReply(None, observed_at, {}, SERVER_UNAVAILABLE,
                                    f"request not sent: {type(e).__name__}: {e}"))

    def _expire(self, rid: int) -> None:
        if rid in self._pending:
            _, observed_at, on_reply, _ = self._pending.pop(rid)
            self.stats["timeouts"] += 1
            on_reply(ChunkReply(None, observed_at, {}, REPLY_TIMEOUT,
                                f"no reply within {self.options.request_timeout:g} s"))

    def _lost(self, why: str) -> None:
        if self._connected.is_set() and not self._closing:
            self.disconnected_at = now()
            self.stats["disconnects"] += 1
            log.warning("policy server %s: %s; reconnecting", self.url, why)
        self._connected.clear()
        self._ws = None
        self._fail_pending(SERVER_UNAVAILABLE, why)

    async def _shutdown(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        for task in asyncio.all_tasks(self._loop):
            if task is not asyncio.current_task():
                task.cancel()


def _with_request_time(on_reply: Callable[[ChunkReply], None], request: float) -> Callable[[ChunkReply], None]:
    def call(reply: ChunkReply) -> None:
        if reply.error is None:
            reply.times["request"] = request
        on_reply(reply)

    return call


def _stage_times(timing: Any, round_trip: float) -> dict[str, float]:
    """The reply's server timing (ms) -> the report's remote stages (s). Malformed timing is informational only:
    the whole round trip is then counted as network."""
    try:
        ms = {k: float(timing[k]) for k in ("server_ms", "queue_ms", "preprocess_ms", "encode_ms", "head_ms")}
    except (TypeError, KeyError, ValueError):
        return {"network": round_trip}
    if not all(np.isfinite(v) and v >= 0 for v in ms.values()):
        return {"network": round_trip}
    compute = ms["queue_ms"] + ms["preprocess_ms"] + ms["encode_ms"] + ms["head_ms"]
    return {"network": max(round_trip - ms["server_ms"] / 1e3, 0.0),
            "server_io": max(ms["server_ms"] - compute, 0.0) / 1e3, "queue": ms["queue_ms"] / 1e3,
            "preprocess": ms["preprocess_ms"] / 1e3, "encode": ms["encode_ms"] / 1e3, "head": ms["head_ms"] / 1e3}


# --- command line ------------------------------------------------------------------------------------------------
class DummyRobot:
    """Black frames and zero proprio of the policy's sizes, actions discarded: checks a connection and its latency
    from the robot's computer without a robot (or a simulator)."""

    def __init__(self, spec: PolicySpec, frame_shape: tuple[int, int]):
        self.observation: dict[str, Any] = {c: np.zeros((*frame_shape, 3), np.uint8) for c in spec.cameras}
        self.observation[spec.proprio_keys[0]] = np.zeros(spec.proprio_dim, np.float32)
        self.observation |= {k: np.zeros(0, np.float32) for k in spec.proprio_keys[1:]}
        self.action_low = -np.ones(spec.action_dim, np.float32)
        self.action_high = np.ones(spec.action_dim, np.float32)

    def get_observation(self) -> dict[str, Any]:
        return {**self.observation, TIMESTAMP_KEY: time.monotonic()}

    def send_action(self, action: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m s2policy.runtime.client",
                                description="run the control loop against a policy server")
    p.add_argument("--server", default="ws://127.0.0.1:8000", help="the policy server's ws:// address")
    p.add_argument("--robot", choices=["sim", "dummy"], default="sim",
                   help="sim: our MuJoCo task in real time; dummy: black frames, actions discarded (latency check)")
    p.add_argument("--task", default=None, help="simulated task (default: the served policy's task, else lift)")
    p.add_argument("--camera-size", type=int, default=224, help="rendered / dummy frame side")
    p.add_argument("--refill-threshold", type=int, default=None,
                   help="request a new chunk when at most this many planned actions are left "
                        "(default horizon - n_action_steps)")
    p.add_argument("--blend-steps", type=int, default=2, help="ticks over which a new chunk fades in over the old")
    p.add_argument("--connect-timeout", type=float, default=30.0, help="seconds to wait for the server at start")
    p.add_argument("--request-timeout", type=float, default=2.0, help="seconds before a request counts as lost")
    add_loop_arguments(p, hz_help="control rate (the rate the policy was trained at)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from .loop import ControlLoop

    remote = None
    try:
        options = ConnectionOptions(request_timeout=args.request_timeout)
        remote = RemotePolicy(args.server, options)
        spec = remote.wait_ready(args.connect_timeout)
        task = args.task or spec.task or "lift"
        if args.robot == "sim":
            from .sim_robot import SimRobot

            robot: Any = SimRobot.for_task(task, cameras=spec.cameras, camera_size=args.camera_size,
                                           sim_hz=args.sim_hz, seed=args.seed)
        else:
            robot = DummyRobot(spec, (args.camera_size, args.camera_size))
        safety = safety_config(args, robot)
        stream = ChunkStream(remote, refill_threshold=args.refill_threshold, blend_steps=args.blend_steps)
        report = ControlLoop(robot, stream, args.hz, safety=safety).run(seconds=args.seconds)
    except (S2PolicyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        if remote is not None:
            remote.close()
        return 2
    report.extra.update(server=args.server, **remote.stats, blended_actions=stream.queue.blended)
    if args.robot == "sim":
        report.extra.update(task=task, episodes_finished=robot.episodes, successes=robot.successes,
                            sim_steps=robot.steps, sim_overruns=robot.overruns)
    print_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

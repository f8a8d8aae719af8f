"""The policy server: one loaded policy answering action-chunk requests from robots over WebSocket + msgpack.

    python -m s2policy.runtime.server --checkpoint run/policy.safetensors --host 0.0.0.0 --port 8000 --threads 1
    python -m s2policy.runtime.server --exported exported/ ...      # graphs from `python -m s2policy.runtime.export`

Each connection is one robot session (its own history window). Requests from all connections go through one
inference thread; whatever is queued when it becomes free runs as one batch (up to `max_batch`, optionally waiting
`batch_wait` seconds for more), so a single robot pays no batching delay and several robots share the model's
batched throughput. Malformed or wrong-shaped messages get an error reply and the connection stays open; nothing
non-finite is ever sent as an action. `GET /healthz` on the same port answers 200 with a JSON status. The wire
format is documented in docs/runtime.md ("Wire protocol"); `protocol` implements it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError, S2PolicyError
from .cli_args import add_runner_arguments, add_verbose_argument, check_runner_arguments, setup_logging
from .protocol import (
    BAD_MESSAGE,
    DEFAULT_MAX_MESSAGE_BYTES,
    INTERNAL,
    PROTOCOL_VERSION,
    as_float32,
    ProtocolError,
    error_message,
    pack,
    request_id,
    unpack,
)
from .cadence import StageTimes
from .service import ChunkRequest, ChunkResult, ChunkService

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000
#: Connections served at once; each may buffer up to 16 messages of max_message_bytes in the WebSocket library, so
#: the cap bounds memory. Robots beyond it get HTTP 503 at the handshake.
DEFAULT_MAX_CONNECTIONS = 16


class PolicyServer:
    """Serves a `ChunkService` on ws://host:port. `serve_forever()` blocks; `start()` runs it in a thread (tests,
    benchmarks) and returns the bound port (pass port=0 for a free one)."""

    def __init__(self, service: ChunkService, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 max_batch: int = 8, batch_wait: float = 0.0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS):
        if max_batch < 1 or batch_wait < 0 or max_connections < 1:
            raise ConfigError(f"max_batch and max_connections must be >= 1 and batch_wait >= 0 (got {max_batch}, "
                              f"{max_connections}, {batch_wait})")
        self.service, self.host, self.port, self.max_connections = service, host, port, max_connections
        self.max_batch, self.batch_wait, self.max_message_bytes = max_batch, batch_wait, max_message_bytes
        self.stats = {"connections": 0, "open_connections": 0, "requests": 0, "errors": 0, "batches": 0, "largest_batch": 0}
        self._started = time.monotonic()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s2policy-serve")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # --- running -----------------------------------------------------------------------------------------------
    def serve_forever(self, ready: Callable[[int], None] | None = None) -> None:
        """Serve until `stop()` (or Ctrl-C); `ready(port)` is called once the socket listens."""
        asyncio.run(self._serve(ready))

    def start(self, timeout: float = 30.0) -> int:
        bound = threading.Event()

        def ready(port: int) -> None:
            self.port = port
            bound.set()

        self._thread = threading.Thread(target=self.serve_forever, args=(ready,), name="s2policy-server", daemon=True)
        self._thread.start()
        if not bound.wait(timeout):
            raise TimeoutError(f"policy server did not start within {timeout:.0f} s")
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._executor.shutdown(wait=False)

    async def _serve(self, ready: Callable[[int], None] | None) -> None:
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._queue: asyncio.Queue = asyncio.Queue()
        batcher = asyncio.create_task(self._batcher())
        # No permessage-deflate: frames are camera images, which it cannot shrink much for its CPU cost.
        async with serve(self._handle, self.host, self.port, compression=None, max_size=self.max_message_bytes,
                         process_request=self._before_handshake, ping_interval=5, ping_timeout=10) as server:
            port = server.sockets[0].getsockname()[1]
            log.info("serving on ws://%s:%d (protocol %d)", self.host, port, PROTOCOL_VERSION)
            if ready is not None:
                ready(port)
            await self._stopping.wait()
        batcher.cancel()

    # --- plain HTTP: health, version negotiation ----------------------------------------------------------------
    def _before_handshake(self, connection: Any, request: Any) -> Any:
        """The health check, or the answer RFC 6455 (4.2.2) requires to a WebSocket version other than 13 (426 with
        the versions we speak; the library says 400 without them); None goes on with the handshake."""
        if request.path.split("?")[0] == "/healthz":
            return self._health(connection, request)
        if self.stats["open_connections"] >= self.max_connections:
            response = connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, f"this server takes at most "
                                                                          f"{self.max_connections} connections\n")
            response.headers["Retry-After"] = "1"
            return response
        versions = request.headers.get_all("Sec-WebSocket-Version")
        if versions and versions != ["13"]:
            response = connection.respond(HTTPStatus.UPGRADE_REQUIRED, f"WebSocket version {', '.join(versions)} is "
                                                                       "not supported; this server speaks 13\n")
            response.headers["Sec-WebSocket-Version"] = "13"
            return response
        return None

    def _health(self, connection: Any, request: Any) -> Any:
        body = {"status": "ok", "protocol": PROTOCOL_VERSION, "uptime_s": round(time.monotonic() - self._started, 1),
                "policy": self.service.spec.to_dict(), **self.stats}
        response = connection.respond(HTTPStatus.OK, json.dumps(body) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        if getattr(request, "method", "GET") == "HEAD":  # the GET's headers, no content (RFC 9110, 9.3.2)
            response = dataclasses.replace(response, body=b"")
        return response

    # --- one connection ----------------------------------------------------------------------------------------
    async def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        self.stats["connections"] += 1
        self.stats["open_connections"] += 1
        session = self.service.session()
        peer = getattr(ws, "remote_address", None)
        log.info("robot connected: %s", peer)
        try:
            await ws.send(pack({"type": "hello", "server": _server_name(), "policy": self.service.spec.to_dict(),
                                "max_message_bytes": self.max_message_bytes}))
            async for frame in ws:
                reply = await self._answer(frame, session)
                await ws.send(pack(reply))
        except ConnectionClosed:
            pass
        finally:
            self.stats["open_connections"] -= 1
            log.info("robot disconnected: %s", peer)

    async def _answer(self, frame: bytes | str, session: Any) -> dict[str, Any]:
        received = time.perf_counter()
        rid = None
        try:
            message = unpack(frame, self.max_message_bytes)
            rid = request_id(message)
            if message["type"] != "infer":
                raise ProtocolError(BAD_MESSAGE, f"unknown message type {message['type']!r} (expected 'infer')")
            if rid is None:
                raise ProtocolError(BAD_MESSAGE, f"'id' must be an integer, got {message.get('id')!r}")
            request = self._request(message, session)
            self.stats["requests"] += 1
            result, queued = await self._infer(request)
        except ProtocolError as e:
            self.stats["errors"] += 1
            return error_message(e.code, str(e), rid if rid is not None else e.rid)
        except Exception as e:  # a bug must cost one reply, not the server
            log.exception("request %s failed", rid)
            self.stats["errors"] += 1
            return error_message(INTERNAL, f"{type(e).__name__}: {e}", rid)
        if result.code is not None:
            self.stats["errors"] += 1
            return error_message(result.code, result.message, rid)
        t = result.times
        timing = {"queue_ms": 1e3 * queued, "preprocess_ms": 1e3 * t.preprocess, "encode_ms": 1e3 * t.encode,
                  "head_ms": 1e3 * t.head, "batch": result.batch}
        timing["server_ms"] = 1e3 * (time.perf_counter() - received)
        return {"type": "actions", "id": rid, "actions": result.actions, "timing": timing}

    def _request(self, message: dict[str, Any], session: Any) -> ChunkRequest:
        spec = self.service.spec
        inputs = spec.check_observation(message.get("observation"))
        episode = message.get("episode")
        if episode is not None and (not isinstance(episode, int) or isinstance(episode, bool)):
            raise ProtocolError(BAD_MESSAGE, f"'episode' must be an integer, got {episode!r:.80}")
        prev = message.get("prev_action")
        return ChunkRequest(session, inputs, episode, None if prev is None else _prev_action(prev, spec.action_dim))

    # --- batching ----------------------------------------------------------------------------------------------
    async def _infer(self, request: ChunkRequest) -> tuple[ChunkResult, float]:
        """-> (result, seconds spent queued)."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future, time.perf_counter()))
        return await future

    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.batch_wait
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                elif loop.time() < deadline:
                    await asyncio.sleep(min(0.001, deadline - loop.time()))
                else:
                    break
            started = time.perf_counter()
            self.stats["batches"] += 1
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
            try:
                results = await loop.run_in_executor(self._executor, self.service.infer, [b[0] for b in batch])
            except Exception as e:  # infer() catches policy errors itself; this is a last resort
                log.exception("batch failed")
                results = [ChunkResult(None, StageTimes(), len(batch), INTERNAL, str(e))] * len(batch)
            for (_, future, queued_at), result in zip(batch, results):
                if not future.done():  # the connection may have gone meanwhile
                    future.set_result((result, started - queued_at))


def _prev_action(value: Any, action_dim: int) -> np.ndarray:
    """A request's prev_action as float32 (action_dim,); ProtocolError unless it is a float array of that shape whose
    values are finite as float32, which the policy computes in (a finite float64 beyond its range would be inf)."""
    ok = isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.shape == (action_dim,)
    if ok:
        action = as_float32(value)
        ok = bool(np.isfinite(action).all())
    if not ok:
        got = f"{getattr(value, 'dtype', type(value).__name__)} {getattr(value, 'shape', '')}"
        raise ProtocolError(BAD_MESSAGE, f"'prev_action' must be float ({action_dim},) finite as float32, got {got}")
    return action


def _server_name() -> str:
    from .. import __version__

    return f"s2policy/{__version__}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m s2policy.runtime.server",
                                description="serve a policy checkpoint to robots (WebSocket + msgpack)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="policy checkpoint (.safetensors file or its directory)")
    source.add_argument("--exported", help="directory written by `python -m s2policy.runtime.export` (onnxruntime "
                                           "or TorchScript; fixed frame sizes, no training stack)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (printed)")
    add_runner_arguments(p)
    p.add_argument("--max-batch", type=int, default=8, help="most requests run as one batch")
    p.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                   help="robots served at once; more get HTTP 503 at the handshake (bounds the server's memory)")
    p.add_argument("--batch-wait-ms", type=float, default=0.0,
                   help="wait this long for more requests before running a batch (0: batch only what is queued)")
    p.add_argument("--warmup-frame-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="frame size of the warm-up requests (default: the training camera size)")
    add_verbose_argument(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from .export import ExportedPolicy
    from .runner import PolicyRunner
    from .service import ExportedChunkService

    try:
        if args.max_batch < 1 or args.max_connections < 1 or args.batch_wait_ms < 0:
            raise ConfigError(f"--max-batch and --max-connections must be >= 1 and --batch-wait-ms >= 0 (got "
                              f"{args.max_batch}, {args.max_connections}, {args.batch_wait_ms})")
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"--port must be 0-65535 (0: a free one), got {args.port}")
        check_runner_arguments(args)
        if args.exported:
            service: ChunkService = ExportedChunkService(ExportedPolicy.load(args.exported, threads=args.threads))
        else:
            service = ChunkService(PolicyRunner.from_checkpoint(
                args.checkpoint, device=args.device, precision=args.precision, compile=args.compile,
                threads=args.threads, warmup_steps=0))
        service.warmup(tuple(args.warmup_frame_size) if args.warmup_frame_size else None)
        server = PolicyServer(service, args.host, args.port, args.max_batch, args.batch_wait_ms / 1e3,
                              max_connections=args.max_connections)
    except (S2PolicyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def ready(port: int) -> None:
        print(f"serving {args.checkpoint or args.exported} on ws://{args.host}:{port} (protocol {PROTOCOL_VERSION}; "
              f"health: http://{args.host}:{port}/healthz)", flush=True)

    try:
        server.serve_forever(ready)
    except KeyboardInterrupt:
        pass
    except OSError as e:  # e.g. the port is taken
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpers for the policy-server tests (no tests here): a server on a tiny policy in a thread, and an independent
minimal client written from the protocol section of docs/runtime.md with websockets + msgpack only (it does not
use s2policy.runtime.protocol, so a mistake shared by our server and our client would still be caught)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator

import msgpack
import numpy as np
from websockets.sync.client import connect

from s2policy.runtime import ChunkService, PolicyRunner, PolicyServer


def tiny_service(ckpt: Path) -> ChunkService:
    return ChunkService(PolicyRunner.from_checkpoint(ckpt, device="cpu", warmup_steps=0))


@contextlib.contextmanager
def running_server(service: ChunkService, port: int = 0, **options: Any) -> Iterator[PolicyServer]:
    server = PolicyServer(service, port=port, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- the spec, implemented independently ---------------------------------------------------------------------------
def wire_array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    data = a.astype(a.dtype.newbyteorder("<")).tobytes()
    return {"__ndarray__": True, "dtype": a.dtype.name, "shape": list(a.shape), "data": data}


def from_wire(obj: dict) -> np.ndarray:
    assert obj["__ndarray__"] is True
    dtype = np.dtype(obj["dtype"]).newbyteorder("<")
    assert len(obj["data"]) == math.prod(obj["shape"]) * dtype.itemsize
    return np.frombuffer(obj["data"], dtype).reshape(obj["shape"])


class RawClient:
    """One connection; `hello` holds the server's first message."""

    def __init__(self, port: int, max_size: int | None = 2**24):
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(f"ws://127.0.0.1:{port}", compression=None, max_size=max_size,
                                                    proxy=None, open_timeout=10))
        self.hello = self.recv()

    def send(self, message: Any) -> None:
        self.ws.send(msgpack.packb(message, use_bin_type=True))

    def recv(self, timeout: float = 30.0) -> dict:
        return msgpack.unpackb(self.ws.recv(timeout=timeout), raw=False)

    def infer(self, rid: int, frame: np.ndarray, proprio: np.ndarray, **extra: Any) -> dict:
        self.send({"v": 1, "type": "infer", "id": rid,
                   "observation": {"agentview": wire_array(frame), "proprio": wire_array(proprio)}, **extra})
        return self.recv()

    def close(self) -> None:
        self._stack.close()


# --- network faults ------------------------------------------------------------------------------------------------
class DelayProxy:
    """A TCP proxy on loopback that delays every piece of data by `delay` +- `jitter` seconds (uniform) in each
    direction, keeping byte order (a piece never overtakes the previous one), like a slow, jittery link."""

    def __init__(self, upstream_port: int, delay: float, jitter: float, seed: int = 0):
        import asyncio
        import random
        import threading

        self.upstream_port, self.delay, self.jitter = upstream_port, delay, jitter
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start() -> None:
            self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()

        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(start(), self._loop)
        assert ready.wait(10)

    async def _connection(self, reader, writer) -> None:
        import asyncio

        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, reader, writer) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                release, data = item
                await asyncio.sleep(max(release - loop.time(), 0))
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.create_task(deliver())
        last = 0.0
        while data := await reader.read(65536):
            last = max(loop.time() + self.delay + self._rng.uniform(-self.jitter, self.jitter), last)
            queue.put_nowait((last, data))
        queue.put_nowait(None)
        await sender

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

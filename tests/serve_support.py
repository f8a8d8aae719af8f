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
def running_server(service: ChunkService, **options: Any) -> Iterator[PolicyServer]:
    server = PolicyServer(service, port=0, **options)
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

"""The policy server on the wire, seen by a client we did not write with the `websockets` library: a hand-written
RFC 6455 client over a raw socket (it controls framing: fragments, control frames in between, sizes, close codes)
and plain HTTP, each checking a statement of docs/runtime.md ("Wire protocol (version 1)") or of RFC 6455."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
from typing import Any

import msgpack
import numpy as np
import pytest
import torch

from s2policy.runtime import ChunkService, PolicyRunner, PolicyServer

from .test_runtime_support import ACTION_DIM, PROPRIO_DIM, write_tiny_checkpoint

MAX_MESSAGE = 16 * 2**20  # the spec's limit
TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


class WireClient:
    """One WebSocket connection on a raw socket: the opening handshake of RFC 6455 (4.1), masked frames built by
    hand (5.2, 5.3); `hello` is the server's first message."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.buffer = b""
        head = self._read_until(b"\r\n\r\n").decode("latin-1").lower()
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()
        assert head.startswith("http/1.1 101") and f"sec-websocket-accept: {accept.lower()}" in head, head
        assert "sec-websocket-extensions" not in head and "sec-websocket-protocol" not in head
        self.hello = self.recv()

    def _read_until(self, end: bytes) -> bytes:
        while end not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(end, 1)
        return head

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("the server closed the TCP connection")
        self.buffer += data

    def send_frame(self, opcode: int, payload: bytes = b"", fin: bool = True) -> None:
        n = len(payload)
        length = bytes([0x80 | n]) if n < 126 else (bytes([0x80 | 126]) + struct.pack("!H", n) if n < 1 << 16
                                                    else bytes([0x80 | 127]) + struct.pack("!Q", n))
        mask = os.urandom(4)
        keystream = np.frombuffer(mask * (n // 4 + 1), np.uint8)[:n]
        masked = (np.frombuffer(payload, np.uint8) ^ keystream).tobytes()
        self.sock.sendall(bytes([(0x80 if fin else 0) | opcode]) + length + mask + masked)

    def recv_frame(self) -> tuple[bool, int, bytes]:
        """-> (fin, opcode, payload) of the server's next frame (never masked, RFC 6455 5.1)."""
        first, second = self._read(2)
        assert not second & 0x80, "a server must not mask its frames"
        n = second & 0x7F
        if n >= 126:
            n = struct.unpack("!H" if n == 126 else "!Q", self._read(2 if n == 126 else 8))[0]
        return bool(first & 0x80), first & 0x0F, self._read(n)

    def recv_data(self) -> tuple[int, bytes]:
        """The next data message (opcode, payload), answering pings and skipping pongs on the way; a close frame is
        returned as (CLOSE, payload)."""
        opcode, parts = None, []
        while True:
            fin, op, payload = self.recv_frame()
            if op == PING:
                self.send_frame(PONG, payload)
            elif op == CLOSE:
                return CLOSE, payload
            elif op != PONG:
                opcode = op if opcode is None else opcode
                parts.append(payload)
                if fin:
                    return opcode, b"".join(parts)

    def send(self, message: Any) -> None:
        self.send_frame(BINARY, msgpack.packb(message, use_bin_type=True))

    def recv(self) -> dict:
        opcode, payload = self.recv_data()
        assert opcode == BINARY, (opcode, payload[:200])
        return msgpack.unpackb(payload, raw=False)

    def expect_close(self) -> int | None:
        """Read until the server's close frame, answer it; -> its status code (None: no code), then TCP ends."""
        while (frame := self.recv_frame())[1] != CLOSE:
            pass
        payload = frame[2]
        self.send_frame(CLOSE, payload[:2])
        with pytest.raises(EOFError):
            self._fill()
        return struct.unpack("!H", payload[:2])[0] if payload else None

    def close(self) -> None:
        self.sock.close()


def wire(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"__ndarray__": True, "dtype": a.dtype.name, "shape": list(a.shape),
            "data": a.astype(a.dtype.newbyteorder("<")).tobytes()}


def infer(rid: Any, seed: int = 0, **extra: Any) -> dict:
    rng = np.random.default_rng(seed)
    return {"v": 1, "type": "infer", "id": rid, "observation": {
        "agentview": wire(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)),
        "proprio": wire(rng.normal(size=PROPRIO_DIM).astype(np.float32))}, **extra}


def http(port: int, request: bytes) -> bytes:
    """Everything the server answers to one raw HTTP request, until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        out = b""
        while data := s.recv(65536):
            out += data
    return out


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the server shares this 2-core machine
    ckpt = write_tiny_checkpoint(tmp_path_factory.mktemp("wire") / "p.safetensors")
    server = PolicyServer(ChunkService(PolicyRunner.from_checkpoint(ckpt, device="cpu", warmup_steps=0)), port=0)
    yield server.start()
    server.stop()
    torch.set_num_threads(threads)


@pytest.fixture
def client(port):
    c = WireClient(port)
    yield c
    c.close()


def test_a_fragmented_message_with_control_frames_in_between(client):
    """RFC 6455 5.4: a message may come in fragments, with control frames between them; the ping is answered with
    its payload at once, the unsolicited pong ignored, and the reassembled request answered."""
    payload = msgpack.packb(infer(41), use_bin_type=True)
    third = len(payload) // 3
    client.send_frame(BINARY, payload[:third], fin=False)
    client.send_frame(PING, b"are you there")
    client.send_frame(CONTINUATION, payload[third:2 * third], fin=False)
    client.send_frame(PONG, b"unsolicited")
    client.send_frame(CONTINUATION, payload[2 * third:])
    assert client.recv_frame() == (True, PONG, b"are you there")
    reply = client.recv()
    assert (reply["type"], reply["id"], reply["actions"]["shape"]) == ("actions", 41, [1, ACTION_DIM])


def test_pipelined_requests_are_answered_in_order_with_their_ids(client):
    """All requests written before any reply is read; any msgpack int is an id (both ends of the 64-bit ranges)."""
    ids = [2**64 - 1, -2**63, 0, -1, 7, 7, 3]
    for k, rid in enumerate(ids):
        client.send(infer(rid, seed=k))
    replies = [client.recv() for _ in ids]
    assert [(r["type"], r["id"]) for r in replies] == [("actions", rid) for rid in ids]
    # the same observation gives the same actions whatever else was in the pipe
    client.send(infer(99, seed=4))
    assert client.recv()["actions"]["data"] == replies[4]["actions"]["data"]


@pytest.mark.parametrize("make, code, phrase", [
    (lambda m: m["observation"]["proprio"].update(data=b"\0" * 21), "bad_message", "21 bytes of data"),
    (lambda m: m["observation"].update(extra={"__ndarray__": True, "dtype": "x"}), "bad_message", "dtype 'x'"),
    (lambda m: m["observation"].update(extra={"__ndarray__": True, "dtype": "uint8", "shape": [2**64 - 1, 0],
                                              "data": b""}), "bad_message", "cannot be represented"),
    (lambda m: m.pop("type"), "bad_message", "no string 'type'"),
    (lambda m: (m.update(v=2), m["observation"]["proprio"].update(dtype="bfloat16")), "unsupported_version",
     "protocol version 2"),  # another version's arrays may differ: its version is what is wrong
    (lambda m: m.update(v=True), "unsupported_version", "protocol version True"),  # equal to 1 in Python only
    (lambda m: m.update(v=1.0), "unsupported_version", "protocol version 1.0"),
    (lambda m: m.update(prev_action=wire(np.array([1e300, 0, 0]))), "bad_message", "finite as float32"),
    (lambda m: m["observation"].update(proprio=wire(np.full(PROPRIO_DIM, 1e300))), "bad_observation",
     "non-finite values (as float32)"),
])
def test_error_replies_carry_the_id_whenever_it_can_be_read(client, make, code, phrase):
    """The spec: `id` is nil only when the request's id could not be read (a malformed array does not hide it, nor
    the message's version). A finite float64 beyond float32's range is refused as such, not run into a policy that
    would make NaN of it."""
    message = infer(23)
    make(message)
    client.send(message)
    reply = client.recv()
    assert (reply["type"], reply["code"], reply["id"]) == ("error", code, 23), reply
    assert phrase in reply["message"], reply["message"]
    client.send(infer(24))
    assert client.recv()["type"] == "actions"  # the connection stays open


def test_messages_beyond_the_item_limits_are_refused_cheaply(client):
    """16 MiB of one-byte empty maps would decode to ~1 GB of Python objects and stall every connection for seconds;
    a message may hold at most 1024 entries in one map or list and 65536 maps, lists and entries in all."""
    flat = msgpack.packb({**infer(5), "extra": list(range(1025))}, use_bin_type=True)
    nested = msgpack.packb({**infer(6), "extra": [[{}] * 1024] * 64}, use_bin_type=True)  # > 64 * 2049 items
    client.send_frame(BINARY, flat)
    reply = client.recv()
    assert (reply["code"], reply["id"]) == ("bad_message", None) and "within the limits" in reply["message"]
    client.send_frame(BINARY, nested)
    reply = client.recv()
    assert reply["code"] == "bad_message" and "more than 65536 maps, lists and entries" in reply["message"]
    client.send({**infer(7), "extra": [[{}] * 1024] * 30})  # within the limits: extra keys are ignored
    assert client.recv()["type"] == "actions"


def test_a_client_vanishing_mid_request_costs_nothing_else(port, client):
    """Requests pipelined, then the TCP connection reset before any reply: the server goes on serving others."""
    gone = WireClient(port)
    for k in range(20):
        gone.send(infer(k))
    gone.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends RST
    gone.close()
    for k in range(3):
        client.send(infer(100 + k, seed=k))
    assert [client.recv()["id"] for _ in range(3)] == [100, 101, 102]


def test_frames_may_be_any_size_up_to_a_side_ratio_of_8(client):
    """S2 scales a frame's shorter side to fixed sizes, so its work grows with the ratio of the sides: a 2 x 2,700,000
    frame (16 MB) once had the server killed for memory. Ratios up to 8 are served, beyond that refused."""
    for k, shape in enumerate([(4, 32), (32, 4), (1, 1), (2, 200)]):
        message = infer(k)
        message["observation"]["agentview"] = wire(np.zeros((*shape, 3), np.uint8))
        client.send(message)
        reply = client.recv()
        if shape == (2, 200):
            assert (reply["code"], reply["id"]) == ("bad_observation", k), reply
            assert "a 2x200 frame has a side over 8 times the other" in reply["message"]
        else:
            assert reply["type"] == "actions", reply


def test_message_size_limit_exactly(port):
    """16 MiB is accepted (and answered: these bytes are not a request); one byte more, even in fragments, closes
    that connection with 1009 (RFC 6455 7.4.1)."""
    client = WireClient(port)
    client.send_frame(BINARY, b"\x00" * MAX_MESSAGE)
    assert client.recv()["code"] == "bad_message"
    client.send_frame(BINARY, b"\x00" * (MAX_MESSAGE // 2), fin=False)
    client.send_frame(CONTINUATION, b"\x00" * (MAX_MESSAGE // 2 + 1))
    assert client.expect_close() == 1009
    client.close()


def test_empty_and_text_frames_get_error_replies_and_the_close_handshake_completes(port, client):
    client.send_frame(BINARY, b"")
    assert client.recv()["code"] == "bad_message"
    client.send_frame(TEXT, b'{"v": 1, "type": "infer"}')
    assert "text frame" in client.recv()["message"]
    client.send(infer(8))
    assert client.recv()["id"] == 8
    client.send_frame(CLOSE, struct.pack("!H", 1000) + b"done")
    assert client.expect_close() == 1000
    other = WireClient(port)
    other.send_frame(CLOSE)  # no status code: none comes back (1005 must not be sent, RFC 6455 7.4.1)
    assert other.expect_close() is None
    other.close()


def test_health_over_plain_http(port):
    """GET (HTTP/1.1 and 1.0) answers 200 with JSON; HEAD the same headers without content (RFC 9110 9.3.2); a
    non-upgrade GET elsewhere is refused with 426."""
    get = http(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = get.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Type: application/json" in head
    assert f"Content-Length: {len(body)}".encode() in head and b'"protocol": 1' in body
    assert http(port, b"GET /healthz HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200")
    only_head = http(port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert only_head.startswith(b"HTTP/1.1 200") and only_head.endswith(b"\r\n\r\n")
    assert f"Content-Length: {len(body)}".encode() in only_head
    assert http(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 426")


def test_an_unsupported_websocket_version_gets_426_naming_13(port):
    """RFC 6455 4.2.2: a version the server does not speak is answered with an error such as 426 and a
    Sec-WebSocket-Version header listing the versions it does."""
    answer = http(port, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 426") and b"\r\nSec-WebSocket-Version: 13\r\n" in answer


def test_robots_beyond_max_connections_get_503_and_a_freed_place_is_taken_again(tmp_path):
    """Each connection may buffer messages of up to 16 MiB in the WebSocket library: the cap bounds the memory."""
    ckpt = write_tiny_checkpoint(tmp_path / "p.safetensors")
    server = PolicyServer(ChunkService(PolicyRunner.from_checkpoint(ckpt, device="cpu", warmup_steps=0)), port=0,
                          max_connections=2)
    port = server.start()
    try:
        first, second = WireClient(port), WireClient(port)
        upgrade = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        refused = http(port, upgrade)
        assert refused.startswith(b"HTTP/1.1 503") and b"\r\nRetry-After: 1\r\n" in refused
        assert b"at most 2 connections" in refused
        assert b'"open_connections": 2' in http(port, b"GET /healthz HTTP/1.0\r\n\r\n")  # health is not a robot
        first.send_frame(CLOSE, struct.pack("!H", 1000))
        assert first.recv_frame()[1] == CLOSE
        first.close()
        for _ in range(100):  # the server notices the closed connection asynchronously
            if b'"open_connections": 1' in http(port, b"GET /healthz HTTP/1.0\r\n\r\n"):
                break
        third = WireClient(port)
        third.send(infer(1))
        assert third.recv()["type"] == "actions"
        second.send(infer(2))
        assert second.recv()["type"] == "actions"
        second.close(), third.close()
    finally:
        server.stop()

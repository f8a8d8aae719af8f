"""The policy server's wire protocol (version 1): msgpack maps in binary WebSocket frames. numpy + msgpack only.

docs/runtime.md ("Wire protocol") is the specification a client in any language is written from; this module is
our implementation of it, shared by the server and the thin robot client. In short:

    server -> client, once on connect   {"v": 1, "type": "hello", "policy": {...PolicySpec...}, ...}
    client -> server                    {"v": 1, "type": "infer", "id": 7, "observation": {...}, ["episode": 3],
                                         ["prev_action": array (A,)]}
    server -> client                    {"v": 1, "type": "actions", "id": 7, "actions": array (horizon, A),
                                         "timing": {"server_ms": ..., ...}}
                                     or {"v": 1, "type": "error", "id": 7 | None, "code": "...", "message": "..."}

Arrays are maps {"__ndarray__": True, "dtype": "uint8" | "float32" | ..., "shape": [...], "data": bytes} holding
the little-endian C-order bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import S2PolicyError

PROTOCOL_VERSION = 1
#: dtypes an array may have on the wire (names as numpy spells them; always little-endian).
WIRE_DTYPES = ("uint8", "int32", "int64", "float32", "float64")
ARRAY_TAG = "__ndarray__"
#: Largest message either side accepts (a 1080p RGB frame is 6.2 MB).
DEFAULT_MAX_MESSAGE_BYTES = 16 * 2**20
#: Most entries one map or list of a message may have, and most maps, lists and entries it may hold in all. A message
#: needs a few dozen; without a bound, 16 MiB of one-byte empty maps decode to ~1 GB of Python objects and stall
#: every connection's event loop for seconds.
MAX_CONTAINER_ITEMS = 1024
MAX_MESSAGE_ITEMS = 65536
#: Longest side of a camera frame over its shortest. S2 scales the shorter side to fixed sizes, so the encoder's work
#: grows with the ratio: a 2 x 2,700,000 frame (16 MB) planned 6.75 million crops and the server was killed for memory.
MAX_FRAME_ASPECT = 8

# Error codes of an "error" reply.
BAD_MESSAGE = "bad_message"  # not msgpack, not a map, unknown type, missing or mistyped field, bad array
BAD_OBSERVATION = "bad_observation"  # an observation the policy cannot take (key, dtype, shape, non-finite)
UNSUPPORTED_VERSION = "unsupported_version"
NONFINITE_ACTION = "nonfinite_action"  # the policy produced NaN/inf; the session's history is reset
INTERNAL = "internal"  # anything else on the server; the server keeps serving
ERROR_CODES = (BAD_MESSAGE, BAD_OBSERVATION, UNSUPPORTED_VERSION, NONFINITE_ACTION, INTERNAL)


class ProtocolError(S2PolicyError):
    """A message that does not follow the protocol; `code` is the error reply's code."""

    def __init__(self, code: str, message: str, rid: int | None = None):
        super().__init__(message)
        self.code, self.rid = code, rid  # rid: the offending message's id, when it could be read


# --- arrays ----------------------------------------------------------------------------------------------------------
def encode_array(array: np.ndarray) -> dict[str, Any]:
    arr = np.asarray(array)
    if arr.dtype.name not in WIRE_DTYPES:
        raise ProtocolError(BAD_MESSAGE, f"dtype {arr.dtype} cannot be sent (allowed: {', '.join(WIRE_DTYPES)})")
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return {ARRAY_TAG: True, "dtype": arr.dtype.name, "shape": list(arr.shape), "data": arr.tobytes()}


def decode_array(obj: Mapping[str, Any], where: str) -> np.ndarray:
    """A wire array -> read-only numpy array; ProtocolError (bad_message) naming `where` if malformed."""
    dtype, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
    if dtype not in WIRE_DTYPES:
        raise ProtocolError(BAD_MESSAGE, f"{where}: dtype {dtype!r} not one of {', '.join(WIRE_DTYPES)}")
    if (not isinstance(shape, list) or len(shape) > 8
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s for s in shape)):
        raise ProtocolError(BAD_MESSAGE, f"{where}: shape {shape!r} is not a list of at most 8 non-negative ints")
    if not isinstance(data, bytes):
        raise ProtocolError(BAD_MESSAGE, f"{where}: data is {type(data).__name__}, expected bytes")
    dt = np.dtype(dtype).newbyteorder("<")
    expected = math.prod(shape) * dt.itemsize
    if len(data) != expected:
        raise ProtocolError(BAD_MESSAGE, f"{where}: {len(data)} bytes of data for shape {shape} {dtype} "
                                         f"({expected} expected)")
    try:
        array = np.frombuffer(data, dtype=dt).reshape(shape)
    except ValueError as e:  # an empty array with a dimension numpy cannot hold (>= 2**63)
        raise ProtocolError(BAD_MESSAGE, f"{where}: shape {shape} cannot be represented ({e})") from None
    return array.astype(dt.newbyteorder("="), copy=False)


def as_float32(values: np.ndarray) -> np.ndarray:
    """`values` as float32, the precision the policy computes in: a finite float64 beyond its range becomes inf
    (silently), so callers check finiteness on the result, not on what came over the wire."""
    with np.errstate(over="ignore"):
        return values.astype(np.float32)


def _encode_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return encode_array(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send {type(obj).__name__}")


class _Decoder:
    """msgpack hooks for one message: count its maps, lists and entries (ProtocolError past MAX_MESSAGE_ITEMS) and
    turn wire arrays into numpy arrays (if `arrays`)."""

    def __init__(self, arrays: bool = True):
        self.arrays, self.items = arrays, 0

    def count(self, container: Any) -> Any:
        self.items += 1 + len(container)
        if self.items > MAX_MESSAGE_ITEMS:
            raise ProtocolError(BAD_MESSAGE, f"message holds more than {MAX_MESSAGE_ITEMS} maps, lists and entries")
        return container

    def map(self, obj: dict[Any, Any]) -> Any:
        self.count(obj)
        if self.arrays and obj.get(ARRAY_TAG) is True:
            return decode_array(obj, "array")
        return obj

    def unpackb(self, frame: bytes) -> Any:
        return _msgpack().unpackb(frame, object_hook=self.map, list_hook=self.count, raw=False, strict_map_key=True,
                                  max_map_len=MAX_CONTAINER_ITEMS, max_array_len=MAX_CONTAINER_ITEMS)


# --- messages --------------------------------------------------------------------------------------------------------
def _msgpack():
    """msgpack, imported on first use: the in-process robot loop and the ONNX backbone live in this package too and
    must not need the `serve` extra."""
    try:
        import msgpack
    except ImportError as e:
        raise ImportError("the policy server protocol needs msgpack: pip install 's2policy[serve]'") from e
    return msgpack


def pack(message: Mapping[str, Any]) -> bytes:
    """A message (its "v" is filled in) -> the bytes of one binary frame. numpy arrays become wire arrays."""
    return _msgpack().packb({"v": PROTOCOL_VERSION, **message}, default=_encode_default, use_bin_type=True)


def unpack(frame: bytes | str, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """The bytes of one frame -> the message map, checked for version and type; ProtocolError otherwise."""
    if isinstance(frame, str):
        raise ProtocolError(BAD_MESSAGE, "text frame; messages are msgpack in binary frames")
    if len(frame) > max_bytes:
        raise ProtocolError(BAD_MESSAGE, f"message of {len(frame)} bytes exceeds {max_bytes}")
    decoder = _Decoder()
    try:
        message = decoder.unpackb(frame)
    except ProtocolError as e:
        if decoder.items <= MAX_MESSAGE_ITEMS:  # a malformed array
            e.rid = _id_of_malformed(frame)
        raise
    except Exception as e:  # msgpack raises several types for truncated, invalid or over-limit input
        detail = f"{type(e).__name__}: {e}"
        raise ProtocolError(BAD_MESSAGE, f"not a msgpack message within the limits ({detail})") from None
    rid = _check_version(message)
    if not isinstance(message.get("type"), str):
        raise ProtocolError(BAD_MESSAGE, "message has no string 'type'", rid)
    return message


def _id_of_malformed(frame: bytes) -> int | None:
    """A message whose arrays are malformed, read without them: ProtocolError (unsupported_version) if it is of
    another version (whose arrays may differ), else its id (None if it has none or cannot be read)."""
    try:
        message = _Decoder(arrays=False).unpackb(frame)
    except Exception:
        return None
    return _check_version(message) if isinstance(message, dict) else None


def _check_version(message: Any) -> int | None:
    """-> the message's id (None if it has no valid one); ProtocolError unless it is a map of this version."""
    if not isinstance(message, dict):
        raise ProtocolError(BAD_MESSAGE, f"message is a msgpack {type(message).__name__}, expected a map")
    version = message.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:  # 1.0 and true equal 1 in Python, not on the wire
        raise ProtocolError(UNSUPPORTED_VERSION, f"protocol version {version!r}; this side speaks {PROTOCOL_VERSION}",
                            request_id(message))
    return request_id(message)


def request_id(message: Mapping[str, Any]) -> int | None:
    """The message's id if it is a valid one (an int), else None (for the error reply)."""
    rid = message.get("id")
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else None


def error_message(code: str, message: str, rid: int | None) -> dict[str, Any]:
    return {"type": "error", "id": rid, "code": code, "message": message[:2000]}


# --- what the policy takes and returns -------------------------------------------------------------------------------
@dataclass
class PolicySpec:
    """The served policy's interface, sent in the server's hello.

    cameras: observation keys of uint8 (H, W, 3) RGB frames; frame_shapes: {camera: [H, W]} when the policy only
    takes one size (exported graphs), else empty (any size). proprio_keys: float keys concatenated (in order) into
    proprio_dim values. The reply's actions are float32 (horizon, action_dim): action i is for the control step i
    periods after the observation was captured.
    """

    cameras: list[str]
    proprio_keys: list[str]
    proprio_dim: int
    action_dim: int
    horizon: int
    history: int = 1
    n_action_steps: int = 1
    frame_shapes: dict[str, list[int]] = field(default_factory=dict)
    task: str | None = None
    encoder: str | None = None
    scales: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "PolicySpec":
        """From a hello's "policy" map; ProtocolError if it is not one."""
        try:
            spec = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except (TypeError, KeyError) as e:
            raise ProtocolError(BAD_MESSAGE, f"hello: malformed policy spec ({e})") from None
        ints = (spec.proprio_dim, spec.action_dim, spec.horizon)
        if (not all(isinstance(v, int) and v >= 0 for v in ints) or spec.action_dim < 1 or spec.horizon < 1
                or not isinstance(spec.cameras, list) or not isinstance(spec.proprio_keys, list)):
            raise ProtocolError(BAD_MESSAGE, f"hello: malformed policy spec {d!r:.300}")
        return spec

    def check_observation(self, observation: Any) -> dict[str, np.ndarray]:
        """The policy's inputs from a received observation map; ProtocolError (bad_observation) naming the key."""
        if not isinstance(observation, dict):
            raise ProtocolError(BAD_MESSAGE, f"'observation' is a {type(observation).__name__}, expected a map")
        out: dict[str, np.ndarray] = {}
        for cam in self.cameras:
            frame = _get(observation, cam)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
                raise ProtocolError(BAD_OBSERVATION, f"camera {cam!r}: expected uint8 (H, W, 3), got "
                                                     f"{frame.dtype} {frame.shape}")
            if max(frame.shape[:2]) > MAX_FRAME_ASPECT * min(frame.shape[:2]):
                raise ProtocolError(BAD_OBSERVATION, f"camera {cam!r}: a {frame.shape[0]}x{frame.shape[1]} frame has a "
                                                     f"side over {MAX_FRAME_ASPECT} times the other")
            fixed = self.frame_shapes.get(cam)
            if fixed and list(frame.shape[:2]) != list(fixed):
                raise ProtocolError(BAD_OBSERVATION, f"camera {cam!r}: this policy takes {fixed[0]}x{fixed[1]} "
                                                     f"frames, got {frame.shape[0]}x{frame.shape[1]}")
            out[cam] = frame
        total = 0
        for key in self.proprio_keys:
            value = _get(observation, key)
            if value.dtype.kind not in "fiu":
                raise ProtocolError(BAD_OBSERVATION, f"{key!r}: expected numbers, got {value.dtype}")
            value = as_float32(value).reshape(-1)
            if not np.isfinite(value).all():
                raise ProtocolError(BAD_OBSERVATION, f"{key!r}: {int((~np.isfinite(value)).sum())} non-finite values "
                                                     "(as float32)")
            total += value.size
            out[key] = value
        if total != self.proprio_dim:
            raise ProtocolError(BAD_OBSERVATION, f"proprio {self.proprio_keys} has {total} values, the policy takes "
                                                 f"{self.proprio_dim}")
        return out

    def select_inputs(self, observation: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """What a client sends from a robot observation: each camera's frame (taken from `<camera>` or
        `<camera>_image`, as robomimic names them) and the proprio keys, as contiguous arrays; nothing else."""
        out: dict[str, np.ndarray] = {}
        for cam in self.cameras:
            key = cam if cam in observation else f"{cam}_image"
            if key not in observation:
                raise ProtocolError(BAD_OBSERVATION, f"observation has no frame for camera {cam!r} "
                                                     f"(keys: {sorted(map(str, observation))})")
            out[cam] = np.ascontiguousarray(observation[key])
        for key in self.proprio_keys:
            if key not in observation:
                raise ProtocolError(BAD_OBSERVATION,
                                    f"observation has no {key!r} (keys: {sorted(map(str, observation))})")
            out[key] = np.ascontiguousarray(observation[key], dtype=np.float32)
        return out

    def check_actions(self, actions: Any) -> np.ndarray:
        """A reply's actions -> float32 (n, action_dim) with 1 <= n <= horizon, all finite; ProtocolError otherwise."""
        if not isinstance(actions, np.ndarray):
            raise ProtocolError(BAD_MESSAGE, f"'actions' is a {type(actions).__name__}, expected an array")
        if actions.dtype.kind != "f" or actions.ndim != 2 or actions.shape[1] != self.action_dim \
                or not 1 <= actions.shape[0] <= self.horizon:
            raise ProtocolError(BAD_MESSAGE, f"'actions' is {actions.dtype} {actions.shape}, expected float "
                                             f"(1..{self.horizon}, {self.action_dim})")
        if not np.isfinite(actions).all():
            raise ProtocolError(NONFINITE_ACTION, f"'actions' has {int((~np.isfinite(actions)).sum())} non-finite "
                                                  "values")
        return actions.astype(np.float32)


def _get(observation: Mapping[str, Any], key: str) -> np.ndarray:
    if key not in observation:
        raise ProtocolError(BAD_OBSERVATION, f"observation has no {key!r} (keys: {sorted(map(str, observation))})")
    value = observation[key]
    if not isinstance(value, np.ndarray):
        raise ProtocolError(BAD_OBSERVATION, f"{key!r} is a {type(value).__name__}, expected an array")
    return value

"""Turning a nested dict (a composed Hydra config, or a user's own dict) into typed config dataclasses, and the
one-line errors for values that are not allowed: "<key>=<value>: <what is allowed>"."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, Union

from ..errors import ConfigError

T = TypeVar("T")


def show(value: Any) -> str:
    """A value as a user would type it on the command line (JSON: null, true, "text", [1, 2])."""
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def bad(key: str, value: Any, allowed: str) -> ConfigError:
    """The one error every check raises."""
    return ConfigError(f"{key}={show(value)}: {allowed}")


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise bad(key, value, f"expected one of {', '.join(map(str, choices))}")


def check_range(key: str, value: float | None, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """`value` within [low, high] (open ends where asked); None passes (optional fields check their own None)."""
    if value is None:
        return
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {high}")
        raise bad(key, value, f"must be {' and '.join(parts)}")


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string", type(None): "null",
            Any: "anything"}.get(tp, getattr(tp, "__name__", str(tp)))


def _matches(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, Mapping)
    return isinstance(value, tp)


def _convert(value: Any, tp: Any) -> Any:
    """Plain Python values of the declared type: tuples become lists, integers in float fields become floats."""
    if tp is float and isinstance(value, int):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, key: str) -> T:
    """`cls(**data)` with every key known and every value of its declared type; nested dataclass fields are
    converted the same way. `key` is where `data` sits in the whole config ("train", "study.eval") for messages."""
    if isinstance(data, cls):
        return data
    data = dict(data or {})
    if hasattr(cls, "split_extra"):  # groups whose remaining keys belong to a plug-in (the policy head's options)
        data = cls.split_extra(data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{key}." if key else ""
        raise bad(f"{where}{unknown[0]}", data[unknown[0]],
                  f"unknown option; {key or 'the config'} has {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        tp, full = hints[name], f"{key}.{name}" if key else name
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, (Mapping, tp)) and value is not None:
                raise bad(full, value, "expected a mapping of options")
            kwargs[name] = from_mapping(tp, value, full)
            continue
        if not _matches(value, tp):
            raise bad(full, value, f"expected {_describe(tp)}")
        kwargs[name] = _convert(value, tp)
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """A config dataclass as the nested dict a Hydra config would give (groups may flatten plug-in options)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else _plain(value)
    return obj.flatten(out) if hasattr(obj, "flatten") else out


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value

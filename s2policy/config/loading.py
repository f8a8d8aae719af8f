"""Where the YAML configs are, composing them (Hydra) and loading the result into the typed run configs."""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError
from .checks import from_mapping, to_dict
from .groups import EvalRun, StudyConfig, TrainRun

T = TypeVar("T")

#: Hydra config name -> the typed config it composes to, and the ConfigStore name of its defaults
SCHEMAS = {"train": (TrainRun, "s2policy_train"), "eval": (EvalRun, "s2policy_eval"),
           "study": (StudyConfig, "s2policy_study")}


def config_dir() -> Path:
    """The YAML configs: shipped inside the installed package (s2policy/configs in a wheel), or the repository's
    top-level configs/ in a source checkout or editable install (the one source the wheel copies)."""
    packaged = Path(__file__).resolve().parents[1] / "configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "configs"


def defaults_dict(cls: type) -> dict[str, Any]:
    """Every option of `cls` with its default, as a nested dict (without running the dataclass's checks)."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out[f.name] = to_dict(hints[f.name]())
        elif f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        else:
            out[f.name] = f.default_factory()
    return out


def register_schemas() -> None:
    """Put every typed config's defaults in Hydra's ConfigStore, so YAML files only select groups and presets
    (`defaults: [s2policy_train, _self_, ...]`). Untyped nodes: type and range errors come from `load`, one line."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for cls, name in SCHEMAS.values():
        cs.store(name=name, node=defaults_dict(cls))


def load(cls: type[T], data: Mapping[str, Any] | T) -> T:
    """A typed config from a (possibly partial) nested dict: missing options take their defaults, `${...}`
    interpolations resolve, and every bad key or value raises one ConfigError line."""
    if isinstance(data, cls):
        return data
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    data = {k: _plain(v) for k, v in dict(data).items() if k != "hydra"}
    try:
        merged = OmegaConf.merge(OmegaConf.create(defaults_dict(cls)), OmegaConf.create(data))
        plain = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{getattr(e, 'full_key', '') or 'config'}: {str(e).splitlines()[0]}") from None
    return from_mapping(cls, plain, "")


def _plain(value: Any) -> Any:
    """Paths as strings and tuples as lists, so a Python caller's values fit a YAML-shaped config."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def compose(config_name: str = "config", overrides: Sequence[str] = (), config_dir_extra: str | None = None,
            ) -> dict[str, Any]:
    """The plain dict Hydra composes from the YAML configs (`config_name` + `overrides`), as the CLIs see it;
    `config_dir_extra` is a user config folder (the CLIs' --config-dir). Errors: one ConfigError line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    register_schemas()
    overrides = list(overrides)
    if config_dir_extra is not None:
        extra = Path(config_dir_extra).resolve()
        if not extra.is_dir():
            raise ConfigError(f"--config-dir={config_dir_extra}: no such folder")
        overrides.append(f"hydra.searchpath=[file://{extra}]")
    try:
        if GlobalHydra.instance().is_initialized():  # inside a Hydra app (the study CLI): its search path
            cfg = hydra_compose(config_name=config_name, overrides=overrides)
        else:
            with initialize_config_dir(str(config_dir()), version_base="1.3"):
                cfg = hydra_compose(config_name=config_name, overrides=overrides)
        run = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # Hydra's composition errors: unknown group option, unknown key, bad override syntax
        raise composition_error(e, overrides) from None
    run.pop("hydra", None)
    return run


def composition_error(e: Exception, overrides: Sequence[str]) -> ConfigError:
    """One line for a Hydra composition failure, naming the override at fault and what is allowed."""
    from hydra.errors import MissingConfigException

    text = str(e)
    if isinstance(e, MissingConfigException) and "Could not find" in text:
        group = text.split("Could not find '", 1)[-1].split("'", 1)[0].rsplit("/", 1)
        options = e.options if getattr(e, "options", None) else []
        bad = next((o for o in overrides if group and o.split("=", 1)[0].lstrip("+~") == group[0]), None)
        if bad is not None and options:
            return ConfigError(f"{bad}: no such {group[0]} config; allowed: {', '.join(sorted(options))}")
    if "Could not override" in text and "not in struct" in str(e.__cause__):
        key = text.split("'", 2)[1]
        bad = next((o for o in overrides if o.split("=", 1)[0] == key), key)
        parent = key.rsplit(".", 1)[0] if "." in key else "the config"
        return ConfigError(f"{bad}: no such option in {parent} (docs/configs.md lists them)")
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    cause = str(e.__cause__).strip().splitlines()[0] if e.__cause__ else ""
    return ConfigError(f"{first}{' (' + cause + ')' if cause and cause not in first else ''}")

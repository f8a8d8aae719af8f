"""Running a Hydra CLI (train, evaluate, study) so that a bad config fails before anything is written: the
command line is composed and validated first -- one line on stderr naming key, value and what is allowed, exit
code 2 -- and only then does Hydra start the run (run folder, logging) and call `work` with the typed config."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import S2PolicyError
from .loading import SCHEMAS, compose, config_dir, load, register_schemas

log = logging.getLogger(__name__)

# Hydra options that take a value; any other flag (--help, --cfg, --multirun, ...) is Hydra's own business.
_VALUE_FLAGS = {"--config-name": "name", "-cn": "name", "--config-dir": "dir", "-cd": "dir",
                "--config-path": "path", "-cp": "path"}


def split_command_line(argv: Sequence[str]) -> tuple[dict[str, str], list[str], bool]:
    """(Hydra options given as {name|dir|path: value}, overrides, whether another Hydra flag is present)."""
    options: dict[str, str] = {}
    overrides: list[str] = []
    other_flags = False
    args = list(argv)
    while args:
        a = args.pop(0)
        flag, eq, value = a.partition("=")
        if flag in _VALUE_FLAGS:
            options[_VALUE_FLAGS[flag]] = value if eq else (args.pop(0) if args else "")
        elif a.startswith("-"):
            other_flags = True
        else:
            overrides.append(a)
    return options, overrides, other_flags


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def run_app(config_name: str, schema: str, work: Callable[[Any], None], argv: Sequence[str] | None = None) -> None:
    """Validate the command line, then run `work(typed config)` as a Hydra app on the packaged configs."""
    import hydra
    from omegaconf import DictConfig, OmegaConf

    cls = SCHEMAS[schema][0]
    argv = sys.argv[1:] if argv is None else list(argv)
    options, overrides, other_flags = split_command_line(argv)
    if not other_flags:  # --help, --cfg, --multirun: Hydra handles them (sweeps validate per job below)
        try:
            load(cls, compose(options.get("name", config_name), overrides, options.get("dir")))
        except S2PolicyError as e:
            fail(str(e))
    register_schemas()

    def task(cfg: DictConfig) -> None:
        try:
            work(load(cls, OmegaConf.to_container(cfg, resolve=True)))
        except S2PolicyError as e:
            log.debug("%s failed", config_name, exc_info=True)
            fail(str(e))

    sys.argv = [sys.argv[0], *argv]  # Hydra parses sys.argv itself
    hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(task)()

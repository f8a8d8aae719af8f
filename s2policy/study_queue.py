"""Run several studies as one resumable background queue: (seed x study) units, seed-major, a few at a time.

    python -m s2policy.study_queue study_v2_twin_m12 study_v2_tiny_goal_r20 --seeds 1 2 3 --jobs 2

Each unit is `python -m s2policy.study --config-name <study> seeds=[<seed>]` in a child process with one torch
thread (parallel processes sharing the cores are fastest that way: docs/evaluation.md). Units run seed by seed, so a
cut leaves every study with the same complete seeds; at most one unit per study runs at a time (a study's folder has
one writer), `--jobs` units in all. Every study reuses its finished stages, so starting the same queue again after a
cut continues it. When every unit of a study has finished, one more run with all the seeds (everything reused)
writes its full report. Each study's output goes to <log-dir>/<study>.log.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .logs import log_to_stderr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One child run of the study driver: a study config and the seeds it runs (None = the config's own)."""

    study: str
    seeds: tuple[int, ...] | None = None
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "s2policy.study", "--config-name", self.study, "progress=false",
                *self.overrides]
        if self.seeds is not None:
            args.append(f"seeds=[{','.join(map(str, self.seeds))}]")
        return args

    def __str__(self) -> str:
        return f"{self.study} seeds={list(self.seeds) if self.seeds is not None else 'config'}"


def plan(studies: Sequence[str], seeds: Sequence[int] | None, overrides: Sequence[str] = ()) -> list[Unit]:
    """The units in run order: for each seed, each study; then each study's full report (all seeds, all reused).
    Without `seeds`, one unit per study with the config's own seeds."""
    extra = tuple(overrides)
    if not seeds:
        return [Unit(s, None, extra) for s in studies]
    units = [Unit(s, (seed,), extra) for seed in seeds for s in studies]
    return units + [Unit(s, tuple(seeds), extra) for s in studies]


def check_units(units: Sequence[Unit]) -> None:
    """Compose and check every unit's study config before anything runs (one ConfigError line on the first bad
    one), so a typo in the last study does not surface hours into the queue."""
    from .config import StudyConfig, compose, load

    for unit in units:
        seeds = [] if unit.seeds is None else [f"seeds=[{','.join(map(str, unit.seeds))}]"]
        load(StudyConfig, compose(unit.study, [*unit.overrides, *seeds]))


def run_queue(units: Sequence[Unit], log_dir: Path, jobs: int = 1, poll: float = 1.0,
              command: Callable[[Unit], list[str]] = Unit.command) -> int:
    """Run `units` in order, up to `jobs` at once and one per study; a study whose unit fails runs nothing more
    (the others go on). `command` turns a unit into its child's argv. Returns 0 when every unit succeeded, else
    the first failing exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log_dir.mkdir(parents=True, exist_ok=True)
    pending = list(units)
    running: dict[str, tuple[Unit, subprocess.Popen]] = {}
    failed: dict[str, int] = {}
    while pending or running:
        for study, (unit, proc) in list(running.items()):
            code = proc.poll()
            if code is not None:
                del running[study]
                log.info("%s: exit code %d", unit, code)
                if code != 0:
                    failed[study] = code
        pending = [u for u in pending if u.study not in failed]
        for unit in list(pending):
            if len(running) >= jobs:
                break
            if unit.study in running:
                continue  # a study's folder has one writer; the next unit of another study may start
            if any(u.study == unit.study for u in pending[:pending.index(unit)]):
                continue  # keep each study's own order
            pending.remove(unit)
            with open(log_dir / f"{unit.study}.log", "a") as out:
                out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {unit}\n")
                out.flush()
                running[unit.study] = (unit, subprocess.Popen(command(unit), stdout=out, stderr=subprocess.STDOUT,
                                                              env=env))
            log.info("%s: started", unit)
        if running:
            time.sleep(poll)
    return next(iter(failed.values()), 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="study config names, e.g. study_v2_twin_m12")
    parser.add_argument("--seeds", type=int, nargs="*", default=None,
                        help="run these seeds one at a time across the studies (default: each config's own, at once)")
    parser.add_argument("--jobs", type=int, default=1, help="units at once (one per study at most)")
    parser.add_argument("--log-dir", default="studies/logs")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="study override for every unit, e.g. --override eval.episodes=20")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs: expected a positive number, got {args.jobs}")
    log_to_stderr(logging.INFO, "%(asctime)s %(message)s")
    units = plan(args.studies, args.seeds, args.override)
    try:
        check_units(units)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run_queue(units, Path(args.log_dir), args.jobs)


if __name__ == "__main__":
    sys.exit(main())

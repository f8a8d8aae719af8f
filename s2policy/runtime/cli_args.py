"""Command-line options shared by the runtime's commands (the in-process loop, the policy server, the robot client),
declared and read in one place. Imports no torch (the robot client uses it)."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from ..errors import ConfigError
from ..logs import log_to_stderr
from .cadence import CadenceReport
from .safety import SafetyConfig


def add_runner_arguments(p: argparse.ArgumentParser) -> None:
    """How the policy runs (PolicyRunner options)."""
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 is often fastest on a busy CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder and head")


def check_runner_arguments(args: argparse.Namespace) -> None:
    """ConfigError for runner options that would fail only after the checkpoint is loaded."""
    if args.threads is not None and args.threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0: the library's default), got {args.threads}")


def add_loop_arguments(p: argparse.ArgumentParser, hz_help: str = "control rate") -> None:
    """The control loop: rate, duration, simulated robot, safety limits, report, logging."""
    p.add_argument("--hz", type=float, default=10.0, help=hz_help)
    p.add_argument("--seconds", type=float, default=20.0, help="how long to run (Ctrl-C stops earlier)")
    p.add_argument("--sim-hz", type=float, default=20.0, help="simulator (robot controller) rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-delta", type=float, default=None, help="per-tick rate limit on every action dimension")
    p.add_argument("--max-observation-age", type=float, default=None, help="seconds (default 3 control periods)")
    p.add_argument("--max-action-age", type=float, default=None,
                   help="seconds from capture (chunk actions: from their slot) to sending (default 5 periods)")
    p.add_argument("--fault-action", choices=["safe", "hold"], default="safe")
    p.add_argument("--json", default=None, help="also write the report as JSON here")
    add_verbose_argument(p)


def add_verbose_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true")


def setup_logging(verbose: bool) -> None:
    log_to_stderr(logging.DEBUG if verbose else logging.INFO, "%(asctime)s %(levelname)s %(name)s: %(message)s")


def safety_config(args: argparse.Namespace, robot: Any) -> SafetyConfig:
    """The loop's limits from the flags, bounded by the robot's action range."""
    return SafetyConfig(low=robot.action_low, high=robot.action_high, max_delta=args.max_delta,
                        max_observation_age=args.max_observation_age, max_action_age=args.max_action_age,
                        fault_action=args.fault_action)


def print_report(report: CadenceReport, json_path: str | None) -> None:
    """Print the cadence report; also write it as JSON (atomically) if asked."""
    print(report.format())
    if json_path:
        from ..fileio import atomic_write_text

        atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2))

"""python -m s2policy.runtime --checkpoint <ckpt> --robot sim --hz 10 [--task lift] [--seconds N]
[--background-inference]

Runs a policy checkpoint (or, with --exported, graphs written by s2policy.runtime.export) in the control loop on a
simulated robot and prints the cadence report.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import S2PolicyError
from .cli_args import (add_loop_arguments, add_runner_arguments, check_runner_arguments, print_report,
                       safety_config, setup_logging)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m s2policy.runtime", description=" ".join(__doc__.splitlines()[3:5]))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="policy checkpoint (.safetensors file or its directory)")
    source.add_argument("--exported", help="directory written by `python -m s2policy.runtime.export` (onnxruntime)")
    p.add_argument("--robot", choices=["sim"], default="sim",
                   help="sim: our MuJoCo task in real time (real robots plug in through the Python API)")
    p.add_argument("--task", default=None, help="simulated task (default: the checkpoint's task, else lift)")
    p.add_argument("--background-inference", action="store_true", help="infer in a worker thread; ticks never wait")
    p.add_argument("--camera-size", type=int, default=None, help="rendered frame side (default: the training one)")
    add_runner_arguments(p)
    add_loop_arguments(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from ..policy import read_policy_config
    from . import ControlLoop, PolicyRunner, SimRobot
    from .export import ExportedPolicy

    try:
        check_runner_arguments(args)
        exported = ExportedPolicy.load(args.exported, threads=args.threads) if args.exported else None
        if exported is not None:
            manifest = exported.manifest
            cameras, task = manifest.cameras, manifest.task
            camera_size = args.camera_size or next((tuple(s) for s in manifest.frame_shapes.values()), 224)
        else:
            config = read_policy_config(args.checkpoint)
            cameras, task = list(config.cameras), config.task
            camera_size = args.camera_size or config.camera_size or 224
        task = args.task or task or "lift"
        robot = SimRobot.for_task(task, cameras=cameras, camera_size=camera_size, sim_hz=args.sim_hz, seed=args.seed)
        try:
            if exported is not None:
                runner = exported
            else:
                runner = PolicyRunner.from_checkpoint(args.checkpoint, device=args.device, precision=args.precision,
                                                      compile=args.compile, threads=args.threads,
                                                      example_observation=robot.get_observation())
            safety = safety_config(args, robot)
        except BaseException:
            robot.close()
            raise
        loop = ControlLoop(robot, runner, args.hz, safety=safety, background=args.background_inference)
        report = loop.run(seconds=args.seconds)
    except (S2PolicyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report.extra.update(task=task, episodes_finished=robot.episodes,
                        successes=robot.successes, sim_steps=robot.steps, sim_overruns=robot.overruns)
    print_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Dataset tools: check a dataset, or export one of ours as a LeRobot v3.0 dataset.

    python -m s2policy.data validate demos.hdf5 [more ...]  # or a LeRobot dataset folder
    python -m s2policy.data export-lerobot demos.hdf5 lift_lerobot/ [--fps 20] [--task lift]

Bad input exits with code 2 and one message naming the file and key; nothing is written.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import S2PolicyError
from ..logs import log_to_stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2policy.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="check robomimic files or LeRobot dataset folders (exit 2 on the first bad)")
    check.add_argument("datasets", nargs="+")
    export = sub.add_parser("export-lerobot", help="write a dataset as a LeRobot v3.0 dataset folder")
    export.add_argument("source")
    export.add_argument("out")
    export.add_argument("--fps", type=float, default=None, help="default: the env_args control frequency")
    export.add_argument("--task", default=None, help="task string (default: the env_args task name)")
    export.add_argument("--cameras", nargs="*", default=None, help="default: every stored camera")
    export.add_argument("--proprio-keys", nargs="+", default=["proprio"], help="-> observation.state")
    export.add_argument("--crf", type=int, default=30, help="AV1 quality (lower is closer to the source)")
    args = parser.parse_args(argv)
    log_to_stderr(logging.INFO, "%(message)s")
    try:
        if args.command == "validate":
            from .check import check_dataset

            for path in args.datasets:
                check_dataset(path)
                print(f"ok: {path}")
        else:
            from .lerobot_export import VideoSettings, export_lerobot

            out = export_lerobot(args.source, args.out, fps=args.fps, cameras=args.cameras,
                                 proprio_keys=args.proprio_keys, task=args.task, video=VideoSettings(crf=args.crf),
                                 progress=True)
            print(f"wrote {out}")
    except S2PolicyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

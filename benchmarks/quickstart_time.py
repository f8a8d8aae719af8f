"""Wall time of the README's main job (the quickstart study) from a fresh clone, with its stage times (JSON).

Clones this repository at `--ref` into a temporary folder, runs `python -m s2policy.study --config-name quickstart`
there (the installed dependencies are used; the clone's own code is imported), and records the total wall time,
every stage's seconds from the study's stages.json, and each configuration's success. Run it once per ref on an idle
machine to compare two versions of the quickstart:

    python benchmarks/quickstart_time.py --ref main --out benchmarks/results/quickstart_time_before.json
    python benchmarks/quickstart_time.py --ref HEAD
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", default="HEAD", help="git ref to clone (a commit, branch or tag)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "quickstart_time.json")
    args = p.parse_args()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.ref], capture_output=True, text=True,
                            check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "s2policy"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", commit], check=True)
        env = {**os.environ, "PYTHONPATH": str(clone)}
        load_before = os.getloadavg()
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "s2policy.study", "--config-name", "quickstart",
                               "progress=false"], cwd=clone, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"quickstart failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        study = clone / "runs" / "quickstart"
        stages = json.loads((study / "stages.json").read_text())
        with open(study / "report" / "results.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    result = {"ref": args.ref, "commit": commit, "wall_seconds": round(wall, 1),
              "stage_seconds": {name: s.get("seconds") for name, s in stages.items()},
              "configurations": rows,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average_before": load_before, "load_average_after": os.getloadavg()}}
    from s2policy.fileio import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("commit", "wall_seconds", "stage_seconds")}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Evaluate policy checkpoints by parallel rollouts (Hydra CLI; configs/eval_policy.yaml, docs/evaluation.md).

    python eval_policy.py checkpoint=outputs/lift_run eval.episodes=50 eval.workers=2 eval.video=2
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from s2policy.errors import S2PolicyError


@hydra.main(config_path="configs", config_name="eval_policy", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from s2policy.evaluate.cli import evaluate_checkpoints

    run = OmegaConf.to_container(cfg, resolve=True)
    try:
        evaluate_checkpoints(run["checkpoint"], run["out_dir"], run["eval"], progress=run["progress"])
    except S2PolicyError as e:
        logging.getLogger("eval_policy").debug("evaluation error", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Train a behaviour-cloning policy on frozen S2 features (Hydra CLI; configs in configs/, docs in docs/training.md).

    python train_policy.py task=lift dataset=demos.hdf5 encoder=efficientnet_lite0 s2.scales=[1,2] policy=mlp
    torchrun --nproc_per_node 2 train_policy.py ...      # DDP (gloo on CPU, nccl on GPUs)
    python train_policy.py ... resume=true               # continue a killed run from its last checkpoint
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from s2policy.errors import S2PolicyError


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from s2policy.train import discard_unstarted_run_dir, train

    run_config = OmegaConf.to_container(cfg, resolve=True)
    run_config.pop("hydra", None)
    try:
        policy_path = train(run_config)
    except S2PolicyError as e:
        logging.getLogger("train_policy").debug("configuration error", exc_info=True)
        discard_unstarted_run_dir(run_config["out_dir"])  # refused before training: leave no run folder behind
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"policy: {policy_path}")


if __name__ == "__main__":
    main()

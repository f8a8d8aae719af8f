#!/usr/bin/env python
"""Train a behaviour-cloning policy on frozen S2 features (= the `s2policy-train` console script; configs in
configs/, options in docs/configs.md, training in docs/training.md).

    python train_policy.py task=lift dataset=demos.hdf5 encoder=efficientnet_lite0 s2.scales=[1,2] policy=mlp
    torchrun --nproc_per_node 2 train_policy.py ...      # DDP (gloo on CPU, nccl on GPUs)
    python train_policy.py ... resume=true               # continue a killed run from its last checkpoint
"""

from s2policy.cli import train

if __name__ == "__main__":
    train()

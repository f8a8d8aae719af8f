#!/usr/bin/env python
"""Evaluate policy checkpoints by parallel rollouts (= the `s2policy-evaluate` console script; configs/eval_policy.yaml,
docs/evaluation.md).

    python eval_policy.py checkpoint=outputs/lift_run eval.episodes=50 eval.workers=2 eval.video=2
"""

from s2policy.cli import evaluate

if __name__ == "__main__":
    evaluate()

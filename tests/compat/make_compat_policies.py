#!/usr/bin/env python
"""Write the small policy files that tests/test_compat.py loads: one tiny_cnn + S2 policy with a transformer head
and one camera-free (proprio + object state) control, trained for a few steps on a seeded synthetic dataset by the
release that first wrote them (s2policy 0.1.0), plus the actions each one gives on fixed observations and the
feature cache keys of that dataset.

Run from the repository root to regenerate (only when the policy file format changes on purpose):
    python tests/compat/make_compat_policies.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from s2policy.data import open_dataset
from s2policy.policy import Policy
from s2policy.train import train
from s2policy.train.synthetic import write_synthetic_demos

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parents[1] / "configs"
COMMON = ["encoder=tiny_cnn", "task.camera_size=32", "train.steps=20", "train.batch_size=16", "train.warmup_steps=2",
          "train.progress=false", "train.tensorboard=false", "seed=1"]
POLICIES = {
    "tiny_cnn_s2_transformer": ["s2.scales=[1,2]", "policy=transformer", "policy.history=2", "policy.horizon=3",
                                "policy.n_action_steps=2", "policy.d_model=16", "policy.layers=1", "policy.heads=2",
                                "policy.dropout=0.0"],
    "camera_free_mlp": ["task.cameras=[]", "task.proprio_keys=[proprio,object]", "policy.hidden=[32,32]"],
}


def observations(dataset: Path, steps: int = 3) -> list[dict[str, list]]:
    """The first `steps` raw observations of demo_0 (frames as nested lists so they fit in JSON)."""
    with open_dataset(dataset) as ds:
        demo = ds.load_demo("demo_0")
    return [{"agentview": demo.obs["agentview_image"][t].tolist(), "proprio": demo.obs["proprio"][t].tolist(),
             "object": demo.obs["object"][t].tolist()} for t in range(steps)]


def main() -> None:
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp())
    try:
        dataset = write_synthetic_demos(work / "demos.hdf5", num_demos=3, length=8, image_size=32, seed=5)
        obs = observations(dataset)
        expected = {"observations": obs, "actions": {}}
        for name, overrides in POLICIES.items():
            with initialize_config_dir(str(CONFIGS), version_base="1.3"):
                cfg = compose("config", overrides=[*COMMON, *overrides, f"dataset={dataset}",
                                                   f"out_dir={work / name}"])
            run = OmegaConf.to_container(cfg, resolve=True)
            run.pop("hydra", None)
            policy_file = train(run)
            shutil.copy(policy_file, HERE / f"{name}.safetensors")
            policy = Policy.load(policy_file, device="cpu")
            policy.reset()
            acts = [policy.act({k: np.asarray(v, dtype=np.uint8 if k == "agentview" else np.float32)
                                for k, v in o.items()}) for o in obs]
            expected["actions"][name] = np.stack(acts).tolist()
        # the feature cache folders training wrote: their names are the cache keys a newer release must reuse
        expected["feature_caches"] = sorted(p.name for p in Path(str(dataset) + ".features").iterdir())
        (HERE / "expected_actions.json").write_text(json.dumps(expected) + "\n")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

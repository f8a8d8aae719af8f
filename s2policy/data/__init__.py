"""Robomimic-format demonstration files: the reader training uses, a validator, and the writer collection uses.

Layout (see docs/envs.md): /data/demo_<i>/{actions, states, rewards, dones, obs/<key>, next_obs/<key>} with attrs
num_samples (and model_file / seed for simulated demos); /data attrs total and env_args (JSON); /mask/<filter_key>
holding byte-string demo names.
"""

from .check import check_dataset
from .reader import Demo, DemoDataset, open_dataset, sorted_demo_keys
from .validate import validate
from .writer import DemoWriter, split_train_valid

__all__ = ["Demo", "DemoDataset", "DemoWriter", "check_dataset", "open_dataset", "sorted_demo_keys",
           "split_train_valid", "validate"]

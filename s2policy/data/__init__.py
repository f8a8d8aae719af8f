"""Demonstration datasets behind one reader interface (`open_episodes` -> `EpisodeReader`), in two formats:

- robomimic HDF5 files (reader.py; the format collection writes): /data/demo_<i>/{actions, states, rewards, dones,
  obs/<key>, next_obs/<key>} with attrs num_samples (and model_file / seed for simulated demos); /data attrs total
  and env_args (JSON); /mask/<filter_key> holding byte-string demo names. See docs/envs.md.
- LeRobot dataset folders, format v3.0 or v2.1 (lerobot.py; Parquet + one MP4 stream per camera), read natively and
  written by `export_lerobot` (lerobot_export.py). See docs/datasets.md.
"""

from .check import check_dataset
from .episodes import EpisodeReader, camera_of_image_key, image_key, is_lerobot_path, open_episodes
from .reader import Demo, DemoDataset, open_dataset, sorted_demo_keys
from .validate import validate
from .writer import DemoWriter, split_train_valid

__all__ = [
    "Demo",
    "DemoDataset",
    "DemoWriter",
    "EpisodeReader",
    "camera_of_image_key",
    "check_dataset",
    "image_key",
    "is_lerobot_path",
    "open_dataset",
    "open_episodes",
    "sorted_demo_keys",
    "split_train_valid",
    "validate",
]

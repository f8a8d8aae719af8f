"""Re-render a stored demo's camera frames from its simulator states, at any camera size."""

from __future__ import annotations

import os

import numpy as np

from .rendering import CameraSize


def rerender(path: str | os.PathLike, demo_key: str, camera: str | None = None,
             camera_size: CameraSize | None = None) -> np.ndarray:
    """uint8 (T, H, W, 3) frames of `camera` (default: the dataset's first camera) for every stored state of
    `demo_key`. camera_size: int or (H, W); default the stored images' size, else the collection size.

    The env is rebuilt from env_args and reset with the demo's seed (Meta-World keeps part of a task's layout in
    the model, not the state), then each state is set and rendered.
    """
    from s2policy.data import open_dataset
    from s2policy.errors import DatasetError

    from .make import make_env

    with open_dataset(path) as dataset:
        kwargs = dataset.env_args.get("env_kwargs", {})
        if "task" not in kwargs:
            raise DatasetError(f"{path}: env_args has no env_kwargs.task; not collected by envs.collect_demos")
        demo = dataset.load_demo(demo_key, obs_keys=[], load_images=False)
        if demo.states is None or "seed" not in demo.attrs:
            raise DatasetError(f"{path}: demo {demo_key} needs 'states' and a 'seed' attribute to be re-rendered")
        camera = camera or kwargs["cameras"][0]
        if camera_size is None:
            stored = f"{camera}_image"
            camera_size = (dataset.obs_array(demo_key, stored).shape[1:3] if stored in dataset.image_keys
                           else kwargs["camera_size"])
    env = make_env(kwargs["task"], cameras=[camera], camera_size=camera_size, **kwargs.get("variation", {}))
    try:
        env.reset(seed=int(demo.attrs["seed"]))
        frames = []
        for state in demo.states:
            env.set_state(state)
            frames.append(env.observation()[camera])
        return np.stack(frames)
    finally:
        env.close()

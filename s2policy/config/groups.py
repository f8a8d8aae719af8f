"""The typed run configs: one dataclass per config group, each option documented once with its one default.

Hydra composes the YAML files under configs/ (group presets such as task/lift.yaml) on top of these defaults; the
result is converted with `from_mapping`, which rejects unknown keys and wrong types, and each group's
`__post_init__` checks ranges, choices and cross-field rules. Every failure is one `ConfigError` line
"<key>=<value>: <what is allowed>" raised before any work starts. See docs/configs.md ("How to add an option").
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any

from .checks import bad, check_choice, check_range

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FEATURE_SOURCES = ("auto", "stored", "render")
FEATURE_DTYPES = ("float16", "float32")
EXECUTION_MODES = ("receding", "ensemble")
POLICY_PLACEMENTS = ("auto", "main", "workers")
EVAL_BACKENDS = ("local", "ray")
BACKBONES = ("torch", "onnx")
S2_POOLS = ("default", "cls", "mean", "map")
#: The default number of actions executed from each predicted chunk (receding horizon). Heads with horizon 1 (mlp)
#: execute one whatever this says.
DEFAULT_N_ACTION_STEPS = 8


@dataclass
class TaskConfig:
    """Group `task` (configs/task/<name>.yaml): the simulated task and what the policy observes."""

    name: str = "lift"  #: task id (envs.list_tasks()); picks the env, its expert and its episode limit
    cameras: list[str] = field(default_factory=lambda: ["agentview"])  #: cameras the encoder sees, in feature order
    camera_size: int | None = 224  #: side of rendered / stored frames; null = stored frames as they are
    proprio_keys: list[str] = field(default_factory=lambda: ["proprio"])  #: low-dim obs keys concatenated as input
    #: task knobs (envs.make_env keywords, e.g. goal_radius for mw-push-tiny-goal; TaskSpec.variations lists them);
    #: checked by envs.task_variation before demos are collected; collect.variation overrides them
    variation: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_range("task.camera_size", self.camera_size, 1)
        if not self.proprio_keys:
            raise bad("task.proprio_keys", self.proprio_keys, "list at least one low-dim observation key")


@dataclass
class EncoderConfig:
    """Group `encoder` (configs/encoder/<name>.yaml): the frozen visual encoder."""

    name: str = "efficientnet_lite0"  #: a registered encoder (`s2policy-encoders`); "none" = sees no image
    weights: str = "pretrained"  #: "pretrained" (official file), "random" (tests) or a local official-format file

    def __post_init__(self) -> None:
        from ..encoders import list_encoders

        check_choice("encoder.name", self.name, list_encoders())


@dataclass
class S2Config:
    """Group `s2`: how the encoder sees each frame at several scales (S2Encoder's options)."""

    scales: list[float] | None = field(default_factory=lambda: [1, 2])  #: multiples of the encoder's native size
    img_sizes: list[int] | None = None  #: absolute sides instead of `scales` (wins when set)
    #: per-scale embedding: default (the encoder's own: CLS, SigLIP's MAP head, else mean) | cls | mean | map
    pool: str = "default"
    #: which scale's grid merged feature maps use (policy=spatial): 0 = the base scale's grid, -1 = the largest's
    resize_output_to_idx: int = 0
    crop_batch_size: int | str = "auto"  #: crops per encoder call: auto = 4 on CPU, 64 on GPU (speed only)
    #: look-closer (docs/s2.md#look-closer): the first scale whole, the second only through `crops` selected crops:
    #: null = plain S2 | gripper (project the end-effector) | saliency (image only) | tiles (= plain S2)
    selector: str | None = None
    crops: int | None = None  #: look-closer: k crops of the second scale per frame; null = 1 (tiles: every tile)
    point_key: str = "proprio"  #: look-closer gripper: observation key holding the end-effector x, y, z
    point_index: int = 0  #: look-closer gripper: index of x within `point_key`
    calibration: str | None = None  #: look-closer gripper: camera calibration JSON; null = the task's MuJoCo camera
    #: look-closer gripper: {camera: calibration record}, filled in before work from `calibration` or the simulator
    #: and stored in the checkpoint (not set by hand)
    camera_models: dict[str, Any] | None = None
    antialias: bool = True  #: low-pass filter a frame before shrinking it to a smaller scale

    def __post_init__(self) -> None:
        if self.scales is not None:
            self.scales = [int(s) if float(s).is_integer() else s for s in self.scales]  # [1, 2] as written
            if not self.scales or min(self.scales) <= 0:
                raise bad("s2.scales", self.scales, "expected a non-empty list of positive multiples")
        if self.img_sizes is not None and (not self.img_sizes or min(self.img_sizes) < 1):
            raise bad("s2.img_sizes", self.img_sizes, "expected a non-empty list of positive sizes")
        if self.scales is None and self.img_sizes is None:
            raise bad("s2.scales", None, "set s2.scales or s2.img_sizes")
        check_choice("s2.pool", self.pool, S2_POOLS)
        if self.crop_batch_size != "auto" and (not isinstance(self.crop_batch_size, int) or self.crop_batch_size < 1):
            raise bad("s2.crop_batch_size", self.crop_batch_size, "expected auto or a positive integer")
        from ..look_closer import LookCloserOptions

        LookCloserOptions.from_s2(vars(self))  # the look-closer options' own checks (k >= 1, known selector, ...)

    def encoder_kwargs(self) -> dict[str, Any]:
        """S2Encoder keyword arguments (unset options left to S2Encoder)."""
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class FeaturesConfig:
    """Group `features`: the frozen-feature cache."""

    cache: bool = True  #: false = run the frozen encoder on every batch (slow; what the cache saves)
    cache_dir: str | None = None  #: null = <dataset>.features/ beside the dataset
    #: auto | stored | render (re-render frames from states at task.camera_size); stored also takes frames smaller
    #: than the encoder's input (e.g. robomimic's 84x84), upsampled, which auto refuses
    source: str = "auto"
    dtype: str = "float16"  #: float16 | float32 storage of cached features
    batch_size: int = 16  #: frames per encoder call during extraction
    #: also cache merged spatial token maps in the pooled cache (policy=spatial does not need this: it streams maps
    #: from its own float16 map cache, keyed by the grid, built automatically)
    store_maps: bool = False
    #: torch | onnx: pooled-feature extraction runs the encoder's crops in ONNX Runtime on the CPU (checked against
    #: torch first; ignored on a GPU; the spatial head's map cache always extracts with torch)
    backbone: str = "torch"

    def __post_init__(self) -> None:
        check_choice("features.source", self.source, FEATURE_SOURCES)
        check_choice("features.backbone", self.backbone, BACKBONES)
        if self.backbone == "onnx":
            check_installed("features.backbone", "onnx", "onnxruntime", "export")
        check_choice("features.dtype", self.dtype, FEATURE_DTYPES)
        check_range("features.batch_size", self.batch_size, 1)


@dataclass
class HeadConfig:
    """Group `policy` (configs/policy/<name>.yaml): the trainable head and how its action chunks are executed.

    Options not listed here belong to the head itself and are checked against its constructor (s2policy/policy/
    heads.py documents them): `policy.hidden` for mlp; history, horizon, d_model, layers, heads, dropout for
    transformer; num_keypoints, hidden, horizon, temperature, learnable_temperature for spatial (configs/policy/
    spatial.yaml; checked by `SpatialOptions`, its map shape comes from the data).
    """

    name: str = "mlp"  #: a head in s2policy.policy.HEADS
    execution: str = "receding"  #: receding (execute n_action_steps, then re-plan) | ensemble (ACT ensembling)
    n_action_steps: int = DEFAULT_N_ACTION_STEPS  #: actions executed per chunk in receding mode
    ensemble_decay: float = 0.01  #: ensemble weights exp(-decay * age rank); 0 = plain mean
    options: dict[str, Any] = field(default_factory=dict)  #: the head's own options (written flat in YAML)

    def __post_init__(self) -> None:
        from ..policy.heads import HEADS
        from ..policy.spatial import SpatialOptions, uses_maps

        check_choice("policy.name", self.name, sorted(HEADS))
        if uses_maps(self.name):  # the spatial head's own options, with their ranges (map_shape is not one)
            SpatialOptions.from_config(self.options)
        check_choice("policy.execution", self.execution, EXECUTION_MODES)
        check_range("policy.n_action_steps", self.n_action_steps, 1)
        check_range("policy.ensemble_decay", self.ensemble_decay, 0)
        params = list(inspect.signature(HEADS[self.name]).parameters)[3:]  # after feature/proprio/action dims
        for k, v in self.options.items():
            if k not in params:
                raise bad(f"policy.{k}", v, f"unknown option of head {self.name}; it has {', '.join(params)}")
        horizon = self.options.get("horizon")
        if self.execution == "receding" and isinstance(horizon, int) and horizon > 1 \
                and self.n_action_steps > horizon:
            raise bad("policy.n_action_steps", self.n_action_steps, f"must be <= policy.horizon={horizon}")

    @classmethod
    def split_extra(cls, data: dict[str, Any]) -> dict[str, Any]:
        own = {"name", "execution", "n_action_steps", "ensemble_decay", "options"}
        options = {**data.pop("options", {}), **{k: data.pop(k) for k in list(data) if k not in own}}
        return {**data, "options": options}

    @staticmethod
    def flatten(d: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in d.items() if k != "options"}, **d["options"]}


@dataclass
class TrainConfig:
    """Group `train`: optimisation of the head on cached features."""

    steps: int = 3000  #: optimisation steps
    batch_size: int = 256  #: global batch (split evenly over torchrun processes)
    lr: float = 1.0e-3  #: peak AdamW learning rate (linear warmup, cosine decay)
    weight_decay: float = 1.0e-4  #: AdamW weight decay
    warmup_steps: int = 100  #: linear warmup steps
    grad_clip: float = 1.0  #: max gradient norm
    ema_decay: float = 0.999  #: EMA of the head's weights; the saved policy holds the EMA weights
    log_every: int = 50  #: steps between train-loss records (metrics.jsonl, TensorBoard)
    val_every: int = 500  #: steps between validation losses (needs a mask/valid split)
    val_max_samples: int = 4096  #: validation steps scored (evenly spaced)
    checkpoint_every: int = 500  #: steps between training-state checkpoints (resume=true continues from the last)
    progress: bool = True  #: tqdm bar
    tensorboard: bool = True  #: also write TensorBoard events
    #: CPU threads of the optimisation loop: auto = 1 on cached features (tiny ops), torch's default in no-cache
    #: mode; an int; null = torch's default
    cpu_threads: int | str | None = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "val_every", "val_max_samples", "checkpoint_every"):
            check_range(f"train.{name}", getattr(self, name), 1)
        check_range("train.lr", self.lr, 0, low_open=True)
        check_range("train.weight_decay", self.weight_decay, 0)
        check_range("train.warmup_steps", self.warmup_steps, 0)
        check_range("train.grad_clip", self.grad_clip, 0, low_open=True)
        check_range("train.ema_decay", self.ema_decay, 0, 1, high_open=True)
        if isinstance(self.cpu_threads, str) and self.cpu_threads != "auto" or \
                isinstance(self.cpu_threads, int) and self.cpu_threads < 1:
            raise bad("train.cpu_threads", self.cpu_threads, "expected auto, a positive integer or null")


@dataclass
class CollectConfig:
    """Group `collect`: scripted-expert demos, collected when no dataset is given (train runs and studies)."""

    num_demos: int = 50  #: demos to collect
    workers: int = 1  #: collection processes
    seed: int = 0  #: first demo seed (evaluation seeds never overlap them)
    camera_size: int | None = None  #: frame side; null = task.camera_size (224 when that is null too)
    variation: dict[str, Any] = field(default_factory=dict)  #: task knobs over task.variation, e.g. {goal_radius: 0.02}
    #: train runs: the file; null = data/<task>_<n>demos_<size>px_seed<seed>.hdf5 (reused when present).
    #: Studies always collect into <study_dir>/demos.hdf5.
    output: str | None = None

    def __post_init__(self) -> None:
        check_range("collect.num_demos", self.num_demos, 1)
        check_range("collect.workers", self.workers, 1)
        check_range("collect.camera_size", self.camera_size, 1)


@dataclass
class EvalSettings:
    """Group `eval`: how policies are scored by rollouts (eval_policy and the study).

    Layouts: workers=0 runs one env in this process (serial, the reference); otherwise `policy_on` = "main" (env
    workers step and render, the main process runs one batched policy call per step), "workers" (each worker
    holds an env and a CPU copy of the policy) or "auto" (the layout measured fastest for the policy's device and
    the worker count: main, pipelined on a CPU with 2+ workers). backend=ray runs the env workers as Ray actors and
    the batched policy on a Ray actor (GPU when the cluster has one). Measured speeds are in docs/evaluation.md.
    """

    episodes: int = 50  #: episodes, on held-out initial states
    workers: int = 2  #: env processes (Ray actors with backend=ray); 0 = one env in this process (serial)
    seed: int = 0  #: picks a block of held-out initial states (never the demos' seeds)
    video: int = 0  #: record the first N episodes as mp4
    max_steps: int | None = None  #: cap below the task's own episode limit; null = the task's
    policy_on: str = "auto"  #: auto | main | workers (see above)
    device: str = "auto"  #: policy device for the main layout and the Ray policy actor
    fps: float = 20.0  #: video frame rate
    dataset: str | None = None  #: training demos (seeds to avoid, env settings); null = the one the run recorded
    task: str | None = None  #: expected task; null = the checkpoint's (a mismatch is an error)
    variation: dict[str, Any] = field(default_factory=dict)  #: env keywords overriding the dataset's
    #: torch CPU threads per CPU policy copy; null = 1 (fastest when cores are shared: docs/evaluation.md)
    threads: int | None = None
    #: main layout: two halves of the envs alternate, env steps overlap policy calls (policy_on=auto turns it on
    #: where it was measured faster)
    pipeline: bool = False
    backbone: str = "torch"  #: torch | onnx: the encoder's crops in ONNX Runtime on the CPU (same features)
    backend: str = "local"  #: local (processes on this machine) | ray (Ray actors: pip install 's2policy[ray]')
    #: backend=ray: the cluster to join (ray.init address, e.g. "ray://head:10001" or "auto"); null = RAY_ADDRESS,
    #: else a Ray instance started on this machine
    ray_address: str | None = None

    def __post_init__(self) -> None:
        check_range("eval.episodes", self.episodes, 1)
        check_range("eval.workers", self.workers, 0)
        check_range("eval.video", self.video, 0)
        check_range("eval.max_steps", self.max_steps, 1)
        check_choice("eval.policy_on", self.policy_on, POLICY_PLACEMENTS)
        check_range("eval.fps", self.fps, 0, low_open=True)
        check_range("eval.threads", self.threads, 1)
        check_choice("eval.backbone", self.backbone, BACKBONES)
        if self.backbone == "onnx":
            check_installed("eval.backbone", "onnx", "onnxruntime", "export")
        check_choice("eval.backend", self.backend, EVAL_BACKENDS)
        if self.backend == "ray":
            check_installed("eval.backend", "ray", "ray", "ray")
            if self.workers == 0:
                raise bad("eval.workers", 0, "eval.backend=ray runs the envs as Ray actors: set eval.workers >= 1")
            if self.policy_on == "workers" or self.pipeline:
                raise bad("eval.backend", "ray", "batches the policy on one Ray actor: use eval.policy_on=auto or "
                          "main, eval.pipeline=false")

    def check(self) -> None:
        """Re-check after attributes were changed in place."""
        self.__post_init__()


@dataclass
class TrainRun:
    """train_policy / s2policy-train: configs/config.yaml composed with its groups."""

    task: TaskConfig = field(default_factory=TaskConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    s2: S2Config = field(default_factory=S2Config)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    policy: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    #: robomimic .hdf5 file or LeRobot dataset folder (docs/datasets.md); null = collect `collect.num_demos` expert
    #: demos first
    dataset: str | None = None
    out_dir: str = "outputs/${task.name}_${encoder.name}_${policy.name}_seed${seed}"  #: the run folder
    seed: int = 0  #: seeds batches, dropout and the head's initialisation
    resume: bool = False  #: continue the run in out_dir from its last checkpoint
    device: str = "auto"  #: auto | cpu | cuda | cuda:N | mps (under torchrun: this process's LOCAL_RANK GPU)
    precision: str = "auto"  #: auto (bf16 on CUDA, fp32 elsewhere) | fp32 | bf16 | fp16

    def __post_init__(self) -> None:
        check_choice("precision", self.precision, PRECISIONS)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if self.train.batch_size % world:
            raise bad("train.batch_size", self.train.batch_size, f"must be divisible by the {world} processes")
        if self.encoder.name == "none":
            self.task.cameras = []  # a policy that sees no image reads no frames
        elif not self.task.cameras:
            raise bad("task.cameras", [], "a policy without cameras sees no image: use encoder=none")
        native = encoder_native_size(self.encoder.name)
        sizes = self.s2.img_sizes or [native * s for s in self.s2.scales or []]
        if any(size % native for size in sizes):
            key = "s2.img_sizes" if self.s2.img_sizes else "s2.scales"
            raise bad(key, getattr(self.s2, key[3:]),
                      f"every size must be a multiple of encoder {self.encoder.name}'s native input size {native}")
        if self.task.camera_size is not None and self.task.camera_size < native:
            raise bad("task.camera_size", self.task.camera_size,
                      f"must be >= encoder {self.encoder.name}'s native input size {native}")


@dataclass
class EvalRun:
    """eval_policy / s2policy-evaluate: configs/eval_policy.yaml."""

    checkpoint: list[str] = field(default_factory=list)  #: policy files or training run folders (one or a list)
    out_dir: str | None = None  #: null = <run folder>/eval; with several checkpoints <out_dir>/<run folder name>
    progress: bool = True  #: tqdm bars
    eval: EvalSettings = field(default_factory=EvalSettings)

    @classmethod
    def split_extra(cls, data: dict[str, Any]) -> dict[str, Any]:
        if isinstance(data.get("checkpoint"), str):  # one checkpoint may be given as a plain string
            data = {**data, "checkpoint": [data["checkpoint"]]}
        return data

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise bad("checkpoint", self.checkpoint, "give a policy file or run folder (checkpoint=outputs/<run>)")


@dataclass
class StudyConfig:
    """s2policy.study / s2policy-study: configs/study.yaml (base vs base + S2 vs larger backbone, with controls)."""

    task: TaskConfig = field(default_factory=TaskConfig)  #: the training config group, also for the study
    policy: HeadConfig = field(default_factory=HeadConfig)  #: the head every configuration trains
    study_dir: str = "studies/${task.name}"  #: everything the study writes (demos, runs, report)
    #: robomimic .hdf5 file or LeRobot dataset folder; null = collect into <study_dir>/demos.hdf5
    dataset: str | None = None
    collect: CollectConfig = field(default_factory=CollectConfig)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  #: training seeds per configuration (pooled)
    train_overrides: list[str] = field(default_factory=list)  #: train_policy overrides for every configuration
    only: list[str] | None = None  #: null = every configuration in definition order; or some names, in run order
    configurations: dict[str, list[str]] = field(default_factory=dict)  #: name -> train_policy overrides
    eval: EvalSettings = field(default_factory=EvalSettings)
    publish_dir: str | None = None  #: receives every run's summary.json + episodes.json (and stages.json)
    progress: bool = True  #: tqdm bars
    report_title: str | None = None  #: null = "<task>: base vs base + S2 vs larger backbone"
    #: "a:b" pairs of configuration names: the report adds a's success minus b's with its 95% interval
    compare: list[str] = field(default_factory=list)
    #: local (one run after another in this process) | ray (each configuration x seed run, training and evaluation,
    #: is a Ray task on the cluster at eval.ray_address; the study folder must be on storage every node sees)
    backend: str = "local"

    def __post_init__(self) -> None:
        check_choice("backend", self.backend, EVAL_BACKENDS)
        if self.backend == "ray":
            check_installed("backend", "ray", "ray", "ray")
            if self.eval.backend == "ray":
                raise bad("eval.backend", "ray", "with backend=ray each run is already a Ray task that evaluates on "
                          "its own node: use eval.backend=local")
        if not self.seeds:
            raise bad("seeds", self.seeds, "list at least one training seed")
        if not self.configurations:
            raise bad("configurations", self.configurations, "define at least one configuration")
        unknown = sorted(set(self.only or []) - set(self.configurations))
        if unknown:
            raise bad("only", self.only, f"no configuration {unknown[0]!r}; defined: {', '.join(self.configurations)}")
        for name, overrides in self.configurations.items():
            if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
                raise bad(f"configurations.{name}", overrides, "expected a list of train_policy overrides")
        for pair in self.compare:
            names = str(pair).split(":")
            if len(names) != 2 or not all(n in self.configurations for n in names):
                raise bad("compare", pair, f"expected a:b, two of: {', '.join(self.configurations)}")

    def compare_pairs(self) -> list[tuple[str, str]]:
        return [tuple(p.split(":")) for p in self.compare]  # type: ignore[misc]


def check_installed(key: str, value: str, module: str, extra: str) -> None:
    """Refuse `key`=`value` before any work when the optional `module` it needs is not installed."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        name = "Ray" if module == "ray" else module
        raise bad(key, value, f"{name} is not installed: pip install 's2policy[{extra}]'")


def encoder_native_size(name: str) -> int:
    """An encoder's native input size, from its architecture alone (built on the meta device: no weights, no cost)."""
    import torch

    from ..encoders import build_encoder

    with torch.device("meta"):
        return int(build_encoder(name, weights="random").native_size)

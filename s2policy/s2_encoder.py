"""`S2Encoder`: a frozen encoder seen at several scales, as the frame -> feature stage of a policy."""

from __future__ import annotations

import functools
import itertools
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .config.groups import S2Config
from .config.checks import from_mapping
from .errors import ConfigError
from .flops import count_gmacs, count_params
from .s2 import ScalePlan, merge_scales, plan_scales, run_scales

POOLS = ("default", "cls", "mean", "map")
# Crops per backbone call: small CPU batches stay in cache (benchmarks/s2_speed.py); GPUs want big ones.
CPU_CROP_BATCH = 4
ACCELERATOR_CROP_BATCH = 64


class S2Encoder(nn.Module):
    """Wrap a frozen encoder (see `s2policy.encoders.build_encoder`) with S2.

    Args:
        encoder: module with `native_size`, `embed_dim`, `output_shape` ('bnc'|'bchw'), `num_prefix_tokens`;
            `encoder(x)` maps (B, 3, native, native) floats in [0, 1] to tokens or a feature map.
        scales: multiples of the encoder's *native* size (not of the frame): (1, 2) on a 224 encoder means
            images of 224 and 448 px, whatever the camera resolution. Default (1, 2).
        img_sizes: absolute image sides instead of `scales` (an int is the shorter side of a non-square frame).
            Every declared size must be a multiple of the native size: crops are always exactly native-sized.
        pool: per-scale embedding: "default" (the encoder's own `default_pool`: CLS for encoders with a prefix token,
            the attention-pooling head for SigLIP, else mean), "cls", "mean" or "map" (the encoder's pooling head).
        resize_output_to_idx: which scale's grid `feature_map` uses (index into the scales as given; -1 = largest).
        antialias: low-pass filter when a scale is smaller than the frame (feed a real high-res frame).
        fit: "resize" (default) rounds a non-square frame's axes to whole crops; "exact" raises instead.
        crop_batch_size: crops per backbone call (crops of all scales share calls); None = all in one call.
            "auto" = 4 on CPU (small channels_last batches stay in cache; measurements against the reference's one
            big call per scale: benchmarks/s2_speed.py, README), 64 on accelerators. Speed and memory only.
        channels_last: memory format of the crops; default = the encoder's own `channels_last` hint.

    Frames are (B, 3, H, W) float RGB in [0, 1], any size and aspect. The encoder runs under
    `torch.inference_mode` (it is frozen); results are returned as ordinary tensors so a trainable head can
    consume them.
    """

    def __init__(
        self,
        encoder: nn.Module,
        scales: Sequence[float] | None = None,
        img_sizes: Sequence[int] | None = None,
        pool: str = "default",
        resize_output_to_idx: int = 0,
        antialias: bool = True,
        fit: str = "resize",
        crop_batch_size: int | str | None = "auto",
        channels_last: bool | None = None,
    ) -> None:
        super().__init__()
        native = int(encoder.native_size)
        if img_sizes is None:
            scales = (1, 2) if scales is None else tuple(scales)
            img_sizes = [int(round(native * s)) for s in scales]
        img_sizes = [int(s) for s in img_sizes]
        bad = [s for s in img_sizes if s <= 0 or s % native]
        if not img_sizes or bad:
            raise ConfigError(
                f"S2 image sizes {img_sizes} for encoder {getattr(encoder, 'name', type(encoder).__name__)}: every "
                f"size must be a positive multiple of its native input size {native} (crops are always {native} px)"
            )
        if pool not in POOLS:
            raise ConfigError(f"pool must be one of {POOLS}, got {pool!r}")
        if pool == "cls" and not encoder.num_prefix_tokens:
            raise ConfigError(f"pool='cls' needs an encoder with a CLS token; {getattr(encoder, 'name', '?')} has none")
        own_pool = getattr(encoder, "default_pool", "cls" if encoder.num_prefix_tokens else "mean")
        if pool == "map" and own_pool != "map":
            name = getattr(encoder, "name", "?")
            raise ConfigError(f"pool='map' needs an encoder with an attention-pooling head; {name} has none")
        if not -len(img_sizes) <= resize_output_to_idx < len(img_sizes):
            raise ConfigError(f"resize_output_to_idx={resize_output_to_idx} is out of range for {len(img_sizes)} scales")
        if fit not in ("exact", "resize"):
            raise ConfigError(f"fit must be 'exact' or 'resize', got {fit!r}")
        if not (crop_batch_size in ("auto", None) or (isinstance(crop_batch_size, int) and crop_batch_size > 0)):
            raise ConfigError(f"crop_batch_size must be a positive int, 'auto' or None, got {crop_batch_size!r}")
        self.encoder = encoder
        self.img_sizes = img_sizes
        self.pool = own_pool if pool == "default" else pool
        self.resize_output_to_idx = resize_output_to_idx
        self.antialias = antialias
        self.fit = fit
        self.crop_batch_size = crop_batch_size
        self.channels_last = bool(getattr(encoder, "channels_last", False) if channels_last is None else channels_last)
        self.requires_grad_(False)
        self.eval()

    # --- properties --------------------------------------------------------------------------------------------
    @property
    def native_size(self) -> int:
        return int(self.encoder.native_size)

    @property
    def num_scales(self) -> int:
        return len(self.img_sizes)

    @property
    def out_dim(self) -> int:
        """Channels of `embed` and of `feature_map`: encoder.embed_dim x number of scales."""
        return int(self.encoder.embed_dim) * self.num_scales

    @property
    def params(self) -> int:
        return count_params(self.encoder)

    def train(self, mode: bool = True) -> "S2Encoder":
        return super().train(False)  # frozen: BatchNorm statistics must never update

    def config(self) -> dict[str, Any]:
        """Everything that determines the features (JSON-able): feature caches key on it."""
        return {
            "encoder": getattr(self.encoder, "name", type(self.encoder).__name__),
            "weights_id": getattr(self.encoder, "weights_id", "unknown"),
            "native_size": self.native_size,
            "img_sizes": list(self.img_sizes),
            "pool": self.pool,
            "resize_output_to_idx": self.resize_output_to_idx,
            "antialias": self.antialias,
            "fit": self.fit,
        }

    # --- planning and cost -------------------------------------------------------------------------------------
    def plan(self, frame_size: tuple[int, int]) -> list[ScalePlan]:
        """Sizes and crop grids for frames of `frame_size` (H, W)."""
        frame = (int(frame_size[0]), int(frame_size[1]))  # plain ints, also when shapes are traced tensors (export)
        return plan_scales(frame, img_sizes=self.img_sizes, max_split_size=self.native_size, fit=self.fit)

    def crops_per_frame(self, frame_size: tuple[int, int] | None = None) -> int:
        frame_size = frame_size or (max(self.img_sizes),) * 2
        return sum(p.num_crops for p in self.plan(frame_size))

    @functools.cached_property
    def _native_gmacs(self) -> float:
        p = next(itertools.chain(self.encoder.parameters(), self.encoder.buffers()), None)
        x = torch.zeros(1, 3, self.native_size, self.native_size, device=p.device if p is not None else "cpu")
        return count_gmacs(self.encoder, x)

    def gmacs(self, frame_size: tuple[int, int] | None = None) -> float:
        """Counted GMACs per frame: every crop is one native-size encoder pass (resizing is not counted)."""
        return self.crops_per_frame(frame_size) * self._native_gmacs

    # --- forward passes ----------------------------------------------------------------------------------------
    def _check(self, frames: torch.Tensor) -> None:
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"S2Encoder expects (B, 3, H, W) RGB frames, got shape {tuple(frames.shape)}")
        if not frames.is_floating_point():
            raise ValueError(
                f"S2Encoder expects float frames in [0, 1], got {frames.dtype}: convert uint8 with x.float() / 255"
            )

    def _chunk_size(self, device: torch.device) -> int | None:
        if self.crop_batch_size != "auto":
            return self.crop_batch_size
        return CPU_CROP_BATCH if device.type == "cpu" else ACCELERATOR_CROP_BATCH

    def _run(self, frames: torch.Tensor) -> tuple[list[torch.Tensor], list[ScalePlan]]:
        self._check(frames)
        plans = self.plan(tuple(frames.shape[-2:]))
        outs = run_scales(self.encoder, frames, plans, antialias=self.antialias, batch_scales=True,
                          chunk_size=self._chunk_size(frames.device), channels_last=self.channels_last)
        return outs, plans

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, embed_dim * num_scales): per-scale canonical embeddings, in scale order.

        CLS pooling averages the crops' CLS tokens (the reference's prefix-token merge); "map" averages the crops'
        attention-pooled embeddings (SigLIP) the same way; mean pooling averages all
        spatial positions of all crops (= global average of the stitched map). With one scale at native size this
        equals `encoder.embed`.
        """
        with torch.inference_mode():
            outs, plans = self._run(frames)
            b = frames.shape[0]
            pooled = [self._pool_crop(out).reshape(p.num_crops, b, -1).mean(dim=0) for out, p in zip(outs, plans)]
            emb = torch.cat(pooled, dim=1)
        return emb.clone()  # an inference-mode tensor could not be saved for a head's backward pass

    def _pool_crop(self, out: torch.Tensor) -> torch.Tensor:
        if self.encoder.output_shape == "bchw":
            return out.mean(dim=(2, 3))
        if self.pool == "cls":
            return out[:, 0]
        if self.pool == "map":
            return self.encoder.pool(out)
        return out[:, self.encoder.num_prefix_tokens:].mean(dim=1)

    def feature_map(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> merged multi-scale features, in the encoder's layout.

        'bchw' encoders: (B, C*K, h, w); 'bnc' encoders: (B, P + h*w, C*K) with P prefix tokens averaged over crops;
        (h, w) is the feature grid of scale `resize_output_to_idx`.
        """
        with torch.inference_mode():
            outs, plans = self._run(frames)
            merged = merge_scales(outs, plans, frames.shape[0], self.resize_output_to_idx,
                                  int(self.encoder.num_prefix_tokens), self.encoder.output_shape)
        return merged.clone()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Alias of `embed`: (B, 3, H, W) -> (B, out_dim)."""
        return self.embed(frames)


def build_s2_encoder(encoder: str, weights: str = "pretrained",
                     s2: S2Config | Mapping[str, Any] | None = None) -> S2Encoder:
    """`build_encoder(encoder, weights)` wrapped in `S2Encoder` with the `s2` options (an S2Config, or a dict of
    its fields checked the same way); every bad value -> one ConfigError, raised before any weights are loaded
    when the options themselves are wrong.

    With `s2.selector` set it builds a look-closer encoder (`s2policy.look_closer.LookCloserEncoder`, an S2Encoder
    whose second scale is seen only through selected crops; its options: `look_closer.LOOK_CLOSER_KEYS`).
    """
    from .encoders import build_encoder
    from .look_closer import LookCloserEncoder, split_s2_options

    options = from_mapping(S2Config, s2 or {}, "s2")  # S2Config checks the look-closer options too
    kwargs, look_closer = split_s2_options(options.encoder_kwargs())
    try:
        enc = build_encoder(encoder, weights=weights)
    except ConfigError:
        raise
    except (KeyError, ValueError) as e:
        raise ConfigError(f"cannot build encoder {encoder!r} (weights={weights!r}): {e}") from e
    try:
        if look_closer is not None:
            return LookCloserEncoder(enc, **kwargs, **{k: v for k, v in vars(look_closer).items() if v is not None})
        return S2Encoder(enc, **kwargs)
    except ConfigError as e:
        raise ConfigError(f"s2 {options.encoder_kwargs()} for encoder {encoder!r}: {e}") from None
    except (ValueError, AssertionError, TypeError) as e:
        raise ConfigError(f"bad S2 settings {kwargs} for encoder {encoder!r} (native {enc.native_size}px): {e}") from e

"""s2policy: robot manipulation policies on frozen pretrained encoders seen at several scales (S2).

    from s2policy import S2Encoder, build_encoder
    enc = S2Encoder(build_encoder("efficientnet_lite0"), img_sizes=[224, 448])
    features = enc.embed(frames)   # (B, 3, H, W) floats in [0, 1] -> (B, 1280 * 2)
"""

__version__ = "0.1.0"
__all__ = ["S2Encoder", "build_encoder", "build_s2_encoder", "multiscale_forward", "__version__"]


def __getattr__(name: str):
    # Loaded on first use: torch (and the encoder zoo's timm/torchvision) must not be imported by the robot client
    # (s2policy.runtime.client), which runs on computers without them.
    if name == "build_encoder":
        from .encoders import build_encoder

        return build_encoder
    if name in ("S2Encoder", "build_s2_encoder"):
        from . import s2_encoder

        return getattr(s2_encoder, name)
    if name == "multiscale_forward":
        from .s2 import multiscale_forward

        return multiscale_forward
    raise AttributeError(f"module 's2policy' has no attribute {name!r}")

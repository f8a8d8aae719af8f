"""s2policy: robot manipulation policies on frozen pretrained encoders seen at several scales (S2)."""

__version__ = "0.1.0"

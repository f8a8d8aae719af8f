"""Exception types. Each names the file / key / value at fault so a user can act on one message."""


class S2PolicyError(Exception):
    """Base class for every error s2policy raises on bad input."""


class ConfigError(S2PolicyError, ValueError):
    """A configuration value is invalid (unknown name, scales that do not tile, ...)."""


class CheckpointError(S2PolicyError):
    """A weight or policy file is missing, truncated, of the wrong format, or does not match the model."""


class DatasetError(S2PolicyError):
    """A demonstration file is malformed (missing group, wrong dtype or shape, out-of-range actions, ...)."""


class TrainingDivergedError(S2PolicyError):
    """Training produced a non-finite loss or gradient; the run stopped before the bad step touched any weight."""


class DiskFullError(S2PolicyError, OSError):
    """A write failed for lack of space (ENOSPC, a quota, or a file-size limit); the previous files are intact."""


class CacheError(S2PolicyError):
    """A feature cache is damaged (a shard truncated or not matching its checksum) or would hold non-finite values."""

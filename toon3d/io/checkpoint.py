"""Checkpoint files: safe loading of untrusted PyTorch files and toon3d's own model format.

Loading never executes code from a file: `torch.load` runs with `weights_only=True`, and
the only class allowed besides tensors and containers is `argparse.Namespace` (rosinality
pickles its training arguments as one). A file that asks for anything else is refused.

toon3d's own model format is ONE safetensors file. Its string metadata holds:
  - `format`: `toon3d-model/1`;
  - `config`: JSON of the constructor arguments needed to rebuild the network;
  - `meta`: JSON of free-form provenance (source file, seed, steps, ...).
One file (rather than a JSON beside it) keeps a save atomic and a copy complete.

Training-resumption state (optimiser moments, step counters) is saved with `torch.save`
of plain tensors, numbers, strings and containers, so it reloads with `weights_only=True`.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from toon3d.errors import Toon3dError
from toon3d.io.atomic import atomic_file

MODEL_FORMAT = "toon3d-model/1"

# The one non-tensor class a rosinality training checkpoint needs (its `args` entry).
SAFE_GLOBALS = [argparse.Namespace]


def _is_cut_name(dotted: str) -> bool:
    # Only names a real checkpoint uses are checked, and only against modules already imported:
    # importing a module named by an untrusted file would run that module's code.
    if not dotted.startswith(("torch.", "collections.")):
        return False
    module, _, attr = dotted.rpartition(".")
    loaded = sys.modules.get(module)
    return loaded is None or not hasattr(loaded, attr)


def _refusal_message(path: Path, err: pickle.UnpicklingError) -> str:
    reason = str(err.__cause__ or err)
    match = re.search(r"GLOBAL ([\w.]+)", reason)
    if match and _is_cut_name(match.group(1)):
        # A truncated legacy (pre-zip) file cuts a global's name in half, e.g. torch._utils._rebuild.
        return f"{path} is truncated or corrupt (it names {match.group(1)}, which does not exist); download it again"
    opcode = re.search(r"Unsupported operand (\d+)", reason)
    if opcode and not match:
        return (f"{path} is not a readable PyTorch checkpoint (pickle opcode {opcode.group(1)} is not allowed: the file "
                "is corrupt, or a general Python pickle whose code toon3d refuses to execute); "
                "pass a file saved with torch.save")
    asks = f" (it asks for {match.group(1)})" if match else ""
    return (f"{path}: toon3d refuses to execute code from the file{asks}; it is not a plain checkpoint "
            "of tensors; re-save its state dicts with torch.save, or check the file's origin")


def load_torch_file(path: str | os.PathLike) -> Any:
    """Load a `.pt`/`.pth` file on the CPU without executing code from it; one-line errors."""
    path = Path(path)
    if not path.exists():
        raise Toon3dError(f"{path} not found; check the path")
    if not path.is_file():
        raise Toon3dError(f"{path} is not a file; pass a checkpoint file")
    if path.stat().st_size == 0:
        raise Toon3dError(f"{path} is empty (0 bytes); download or save it again")
    try:
        with warnings.catch_warnings():
            # Raised for protocol-4 pickles before the unpickler refuses them; the error says more.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            raise Toon3dError(_refusal_message(path, err)) from None
        raise Toon3dError(f"{path} is not a readable PyTorch checkpoint (corrupt pickle); download it again") from None
    except EOFError:
        raise Toon3dError(f"{path} is truncated (ended early); download or save it again") from None
    except OSError as err:
        raise Toon3dError(f"cannot read {path}: {err.strerror or err}; check the file and its permissions") from None
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError,
            zipfile.BadZipFile, UnicodeDecodeError, MemoryError, OverflowError) as err:
        raise Toon3dError(
            f"{path} is not a readable PyTorch checkpoint (corrupt or truncated: {type(err).__name__}); "
            "download it again") from None


def load_torch_checkpoint(path: str | os.PathLike) -> dict:
    """Load a PyTorch checkpoint that must be a non-empty dict (a state dict or a training checkpoint)."""
    path = Path(path)
    obj = load_torch_file(path)
    if not isinstance(obj, dict):
        raise Toon3dError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict; pass a state-dict checkpoint")
    if not obj:
        raise Toon3dError(f"{path} is an empty checkpoint (no entries); pass a trained checkpoint")
    return obj


@dataclass
class ModelFile:
    """A toon3d model file's contents: tensors, the constructor config and provenance."""

    state_dict: dict[str, torch.Tensor]
    config: dict
    meta: dict = field(default_factory=dict)


def _json_or_error(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise Toon3dError(f"model {what} is not JSON-serialisable ({err}); use numbers, strings, lists and dicts") from None


def save_model(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], config: dict,
               meta: dict | None = None) -> Path:
    """Write tensors + config + meta as one safetensors file, atomically (complete or absent)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise Toon3dError(f"cannot save {name!r}: a {type(value).__name__}, not a tensor")
        # clone: safetensors refuses tensors that share storage, which views of one buffer do.
        tensors[name] = value.detach().to("cpu").contiguous().clone()
    metadata = {
        "format": MODEL_FORMAT,
        "config": _json_or_error(config, "config"),
        "meta": _json_or_error(meta or {}, "meta"),
    }
    with atomic_file(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except OSError as err:
            raise Toon3dError(f"cannot write {path}: {err.strerror or err}; choose a writable path with free space") from None
    return path


def load_float_state(net: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, what: str,
                     retrain: str) -> torch.nn.Module:
    """Load `state` (fp16 shipped weights become float32) into `net` strictly; a mismatch is one line
    naming `source`, the architecture `what` and the `retrain` hint. Returns `net`."""
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    except RuntimeError as err:
        raise Toon3dError(f"{source} does not match the {what} architecture ({str(err).splitlines()[0]}); "
                          f"{retrain}") from None
    return net


def load_model_file(path: str | os.PathLike) -> ModelFile:
    """Read a file written by `save_model`; tensors land on the CPU."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise Toon3dError(f"{path} not found; check the path")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise Toon3dError(f"{path} is not a readable safetensors file ({reason}); download or save it again") from None
    if metadata.get("format") != MODEL_FORMAT:
        raise Toon3dError(
            f"{path} is a safetensors file but not a toon3d model (format {metadata.get('format')!r}, "
            f"expected {MODEL_FORMAT!r}); pass a file written by toon3d")
    try:
        config = json.loads(metadata["config"])
        meta = json.loads(metadata.get("meta", "{}"))
    except (KeyError, json.JSONDecodeError):
        raise Toon3dError(f"{path} has a damaged config in its metadata; save the model again") from None
    for what, value in (("config", config), ("meta", meta)):
        if not isinstance(value, dict):
            raise Toon3dError(f"{path}: its {what} metadata is a JSON {type(value).__name__}, not an object; "
                              "save the model again with toon3d")
    return ModelFile(state_dict=tensors, config=config, meta=meta)


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, (torch.Tensor, int, float, bool, str, type(None))):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise Toon3dError(f"training state key {where}[{key!r}] is a {type(key).__name__}; use str or int keys")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise Toon3dError(f"training state {where} is a {type(value).__name__}; only tensors, numbers, strings "
                      "and containers can be saved loadably")


def save_training_state(path: str | os.PathLike, state: dict) -> Path:
    """torch.save a dict of plain tensors/numbers/containers atomically; it reloads with weights_only=True."""
    path = Path(path)
    _check_plain(state, "state")
    with atomic_file(path) as tmp:
        try:
            torch.save(state, tmp)
        except OSError as err:
            raise Toon3dError(f"cannot write {path}: {err.strerror or err}; choose a writable path with free space") from None
    return path


def load_training_state(path: str | os.PathLike) -> dict:
    """Load a dict saved by `save_training_state` (or any plain-tensor dict), safely."""
    return load_torch_checkpoint(path)

"""Saving and loading VideoUNet checkpoints: model.safetensors + config.json (+ training.json).

Safetensors only: a weights file never runs code. Every loading problem is a ValueError with one
line naming the file or the first offending key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from vdengine.models.config import ModelConfig
from vdengine.models.unet import VideoUNet

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METADATA_FILE = "training.json"


def available_models() -> list[str]:
    """Names of the models shipped under vdengine/weights/ (directories with a config.json)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(
        p.name for p in WEIGHTS_DIR.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file()
    )


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_model(
    model: VideoUNet, directory: str | os.PathLike, extra_metadata: dict | None = None
) -> Path:
    """Write ``model`` as a model directory: model.safetensors, config.json and, when
    ``extra_metadata`` is given, training.json. Files are written to temporary names and renamed.
    Returns the directory."""
    from safetensors.torch import save

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "vdengine_model": type(model).__name__}
    _atomic_write_bytes(d / WEIGHTS_FILE, save(tensors, metadata=meta))
    _atomic_write_bytes(d / CONFIG_FILE, (model.config.to_json() + "\n").encode())
    if extra_metadata is not None:
        text = json.dumps(extra_metadata, indent=2, sort_keys=True, default=str) + "\n"
        _atomic_write_bytes(d / METADATA_FILE, text.encode())
    return d


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A directory path as is, else a shipped model name under vdengine/weights/."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    shipped = WEIGHTS_DIR / str(name_or_path)
    if not os.sep in str(name_or_path) and shipped.is_dir():
        return shipped
    if p.exists():
        raise ValueError(
            f"{str(p)!r} is not a model directory (expected {CONFIG_FILE} + {WEIGHTS_FILE})"
        )
    raise ValueError(
        f"unknown model {str(name_or_path)!r}: not a directory and not a shipped model "
        f"(available: {', '.join(available_models()) or 'none'})"
    )


def load_config(directory: str | os.PathLike) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"missing {CONFIG_FILE} in model directory {str(directory)!r}")
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "family" in data:
            raise ValueError(f"it holds a {data['family']!r} family model, not a VideoUNet: "
                             "load it with vdengine.models.families.load_family")
        return ModelConfig.from_dict(data)
    except (ValueError, TypeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"invalid {path}: {msg}") from None


def load_metadata(directory: str | os.PathLike) -> dict:
    """training.json of a model directory ({} when absent)."""
    path = Path(directory) / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file into CPU tensors; a damaged file is a one-line ValueError."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"missing weights file {str(path)!r}")
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types, OSError, ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"corrupted safetensors file {str(path)!r}: {msg}") from None


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise ValueError naming the first missing/unexpected key or shape mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise ValueError(
            f"{source} does not match its config: missing key {missing[0]!r} "
            f"({len(missing)} missing)"
        )
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ValueError(
            f"{source} does not match its config: unexpected key {unexpected[0]!r} "
            f"({len(unexpected)} unexpected)"
        )
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(
                f"{source} does not match its config: key {k!r} has shape "
                f"{tuple(state[k].shape)}, expected {tuple(v.shape)}"
            )


def load_model(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> VideoUNet:
    """Load a model directory (or a shipped model by name) as an inference-ready VideoUNet:
    eval mode, parameters frozen, ops "auto" (the fused kernels, as nothing needs autograd)."""
    d = resolve_model_dir(name_or_path)
    if not (d / WEIGHTS_FILE).is_file():
        raise ValueError(f"missing {WEIGHTS_FILE} in model directory {str(d)!r}")
    return restore(VideoUNet(load_config(d)), d, device, dtype, ops="auto")


def restore(model: torch.nn.Module, directory: Path, device: str | torch.device = "cpu",
            dtype: torch.dtype | None = None, ops: str = "auto") -> torch.nn.Module:
    """Fill a freshly built model with directory's weights (checked key by key and shape by
    shape), move it, freeze it (eval mode, no grad), set its ops and attach ``.metadata``
    (training.json)."""
    state = load_state(directory / WEIGHTS_FILE)
    check_state_dict(model, state, str(directory / WEIGHTS_FILE))
    model.load_state_dict(state, strict=True)
    model.to(device=device)
    if dtype is not None:
        model.to(dtype=dtype)
    model.eval().requires_grad_(False)
    model.set_ops(ops)
    model.metadata = load_metadata(directory)
    return model


__all__ = [
    "WEIGHTS_DIR",
    "available_models",
    "check_state_dict",
    "load_config",
    "load_metadata",
    "load_model",
    "load_state",
    "resolve_model_dir",
    "restore",
    "save_model",
]

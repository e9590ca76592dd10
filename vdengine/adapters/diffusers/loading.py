"""``load_diffusers``: a diffusers video UNet (instance, model directory or pipeline directory) as an
accelerated DiffusersDenoiser, with its scheduler and VAE. Local files only: never a download."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import diffusers
import torch
from torch import nn

from vdengine.adapters.diffusers.accelerate import shared_copy
from vdengine.adapters.diffusers.denoiser import DiffusersDenoiser
from vdengine.adapters.diffusers.families import Family, family_named, family_of
from vdengine.adapters.diffusers.options import AccelerationOptions

__all__ = ["load_diffusers"]

#: VAE classes a pipeline directory may name.
VAE_CLASSES = ("AutoencoderKL", "AutoencoderKLTemporalDecoder")


def load_diffusers(source: Any, scheduler: Any = None, vae: Any = None, *,
                   device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                   options: AccelerationOptions | None = None
                   ) -> tuple[DiffusersDenoiser, Any, nn.Module | None]:
    """Load a diffusers video UNet behind the Denoiser protocol, accelerated.

    Args:
        source: a ``UNet3DConditionModel``, ``UNetMotionModel`` or
            ``UNetSpatioTemporalConditionModel`` instance (used through a copy that shares its
            weights, or converted copies when device/dtype differ: the instance is not changed);
            a model directory (``config.json`` with ``_class_name`` and the safetensors weights,
            as ``save_pretrained`` writes); or a pipeline directory (``model_index.json`` with a
            ``unet`` subfolder, and ``scheduler`` / ``vae`` ones when present).
        scheduler: a diffusers scheduler, a scheduler config dict, or a path to a
            scheduler_config.json or its directory. Default: the pipeline directory's, else the
            config the model family's pipeline ships with (families.py).
        vae: a VAE instance (returned as given) or a VAE model directory. Default: the pipeline
            directory's, else None.
        device, dtype: where and in which precision the UNet runs (the VAE loaded from a
            directory too). CPU kernels take float32 and bfloat16; float16 runs on PyTorch.
        options: which diffusers modules to replace (AccelerationOptions; default all).

    Returns:
        (denoiser, scheduler object or config dict, vae or None).

    Raises:
        ValueError: one line naming what was expected (an unsupported class, a missing file).
    """
    device = torch.device(device)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if isinstance(source, nn.Module):
        family_of(source)  # the class check, before any copy
        unet = shared_copy(source, device, dtype)
        default_scheduler = None
    elif isinstance(source, (str, Path)):
        unet, default_scheduler, dir_vae = _load_directory(Path(source), device, dtype)
        if vae is None:
            vae = dir_vae
    else:
        raise TypeError(f"source must be a diffusers video UNet or a directory path, got "
                         f"{type(source).__name__}")
    scheduler = _scheduler(scheduler, default_scheduler, family_of(unet))
    if isinstance(vae, (str, Path)):
        vae = _load_vae(Path(vae), None, device, dtype)
    elif vae is not None and not isinstance(vae, nn.Module):
        raise TypeError(f"vae must be a diffusers VAE, a directory path or None, got "
                         f"{type(vae).__name__}")
    denoiser = DiffusersDenoiser(unet, scheduler, options=options, inplace=True)
    return denoiser, scheduler, vae


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None


def _from_pretrained(cls: type, path: Path, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """cls.from_pretrained from local files only (safetensors), moved to device."""
    weights = list(path.glob("*.safetensors"))
    if not weights:
        raise ValueError(f"no .safetensors weights in {path} (vdengine loads safetensors only)")
    model = cls.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                torch_dtype=dtype)
    return model.to(device).eval()


def _load_unet(path: Path, device: torch.device, dtype: torch.dtype) -> nn.Module:
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"no config.json in {path}")
    name = _read_json(config).get("_class_name", "")
    family: Family = family_named(name, str(config))
    return _from_pretrained(family.cls, path, device, dtype)


def _load_vae(path: Path, name: str | None, device: torch.device, dtype: torch.dtype
              ) -> nn.Module:
    if name is None:
        config = path / "config.json"
        if not config.is_file():
            raise ValueError(f"no config.json in the VAE directory {path}")
        name = _read_json(config).get("_class_name", "")
    if name not in VAE_CLASSES:
        raise ValueError(f"the VAE in {path} is a {name!r}; expected one of {VAE_CLASSES}")
    return _from_pretrained(getattr(diffusers, name), path, device, dtype)


def _load_directory(path: Path, device: torch.device, dtype: torch.dtype
                    ) -> tuple[nn.Module, Any, nn.Module | None]:
    """(unet, the directory's scheduler config or None, its VAE or None)."""
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory (expected a diffusers model or pipeline "
                         f"directory)")
    index = path / "model_index.json"
    if not index.is_file():
        if (path / "config.json").is_file():
            return _load_unet(path, device, dtype), None, None
        raise ValueError(f"{path} has neither model_index.json (a pipeline) nor config.json "
                         f"(a model)")
    components = _read_json(index)
    if "unet" not in components or not (path / "unet").is_dir():
        raise ValueError(f"the pipeline in {path} has no unet component (model_index.json and a "
                         f"unet/ folder)")
    unet = _load_unet(path / "unet", device, dtype)
    scheduler = None
    scheduler_file = path / "scheduler" / "scheduler_config.json"
    if "scheduler" in components and scheduler_file.is_file():
        scheduler = _read_json(scheduler_file)
    vae = None
    if components.get("vae") and (path / "vae").is_dir():
        vae_name = components["vae"][1] if isinstance(components["vae"], list) else None
        vae = _load_vae(path / "vae", vae_name, device, dtype)
    return unet, scheduler, vae


def _scheduler(given: Any, from_directory: Any, family: Family) -> Any:
    """The scheduler to return: given (an object, dict or path), else the directory's, else the
    family default."""
    if given is None:
        return dict(from_directory if from_directory is not None else family.default_scheduler)
    if isinstance(given, (str, Path)):
        path = Path(given)
        if path.is_dir():
            path = path / "scheduler_config.json"
        if not path.is_file():
            raise ValueError(f"scheduler path {str(given)!r} is not a scheduler_config.json or a "
                             f"directory holding one")
        return _read_json(path)
    if isinstance(given, dict) or hasattr(given, "config"):
        return given
    raise TypeError(f"scheduler must be a diffusers scheduler, a config dict, a path or None, "
                     f"got {type(given).__name__}")

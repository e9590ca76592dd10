"""The seed families as loadable model types: VIDM and VideoFusion model directories.

A family's model directory is like a VideoUNet's (model.safetensors + config.json [+
training.json]) with a ``"family"`` key in config.json. `load_family` turns it into a pipeline
with the same ``generate(...)`` as vdengine.api.Pipeline:

- VideoFusion: its model is one vdengine Denoiser, so its pipeline IS a Pipeline; the subclass
  only draws the initial noise decomposed as in training (√λ·b + √(1−λ)·r_i, one b per video)
  and picks ``SharedNoise(lam=λ)`` when num_frames exceeds the window and no long_video= is
  given.
- VIDM: frame 0 by the content generator, then one frame at a time by the motion generator
  (vdengine.models.vidm.sample_frames), streamed to ``output=`` frame by frame. Any num_frames
  works in constant memory; ``long_video=`` and ``latents=`` do not apply.

The API's one hook (vdengine.api.load): a model directory whose config has a family goes here::

    from vdengine.models.families import family_of, load_family
    if family_of(model) is not None:
        return load_family(model, device, dtype)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vdengine._validate import check_int
from vdengine.api import DEFAULT_FPS, DEFAULT_UPSCALE, Pipeline, make_generator
from vdengine.denoiser import conditioning_rows
from vdengine.models.family_config import FamilyConfig
from vdengine.models.loading import (
    CONFIG_FILE,
    METADATA_FILE,
    WEIGHTS_FILE,
    _atomic_write_bytes,
    load_metadata,
    resolve_model_dir,
    restore,
)
from vdengine.models.videofusion import VideoFusion, VideoFusionConfig
from vdengine.models.vidm import VIDM, FamilyStats, VIDMConfig, sample_frames
from vdengine.samplers import SAMPLERS
from vdengine.video import Video

#: family name → (config class, model class)
FAMILIES: dict[str, tuple[type[FamilyConfig], type[nn.Module]]] = {
    "vidm": (VIDMConfig, VIDM),
    "videofusion": (VideoFusionConfig, VideoFusion),
}
#: Sampler defaults of the families' pipelines. They predict ε in pixel space on the linear β
#: schedule, where x̂_0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ amplifies ε̂'s error by 1/√ᾱ (≈ 160 at t = 999,
#: ≈ 49 at t = 875): as DDPM's own sampler (and diffusers' DDPM/DDIM pixel pipelines), the
#: samplers clip x̂_0 to the data range [−1, 1] (docs/families.md shows what it changes).
SAMPLER_OPTIONS = {"spacing": "leading", "clip_sample": 1.0}


# ------------------------------------------------------------------------------------ files
def family_of(name_or_path: str | os.PathLike) -> str | None:
    """The family of a model directory (or shipped model name): "vidm", "videofusion", or None
    for a VideoUNet directory and anything that is not a model directory (load_model reports
    those)."""
    try:
        d = resolve_model_dir(name_or_path)
        data = json.loads((d / CONFIG_FILE).read_text())
    except (ValueError, OSError, TypeError):
        return None
    family = data.get("family") if isinstance(data, dict) else None
    if family is not None and family not in FAMILIES:
        raise ValueError(f"{str(d / CONFIG_FILE)!r}: unknown model family {family!r} "
                         f"(known: {', '.join(FAMILIES)})")
    return family


def config_class(family: str) -> type[FamilyConfig]:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    return FAMILIES[family][0]


def build_model(config: FamilyConfig) -> nn.Module:
    """A fresh (randomly initialised) model of the config's family."""
    return FAMILIES[config.FAMILY][1](config)


def save_family(model: VIDM | VideoFusion, directory: str | os.PathLike,
                extra_metadata: dict | None = None) -> Path:
    """Write a family model directory: model.safetensors, config.json (with "family") and, when
    given, training.json. Files are written to temporary names and renamed."""
    from safetensors.torch import save

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "vdengine_model": type(model).__name__,
            "family": model.config.FAMILY}
    _atomic_write_bytes(d / WEIGHTS_FILE, save(tensors, metadata=meta))
    _atomic_write_bytes(d / CONFIG_FILE, (model.config.to_json() + "\n").encode())
    if extra_metadata is not None:
        text = json.dumps(extra_metadata, indent=2, sort_keys=True, default=str) + "\n"
        _atomic_write_bytes(d / METADATA_FILE, text.encode())
    return d


def load_family_model(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
                      dtype: torch.dtype | None = None) -> VIDM | VideoFusion:
    """A family model directory (or shipped name) as an inference-ready module: eval mode,
    frozen, fused ops; ``.metadata`` holds its training.json."""
    d = resolve_model_dir(name_or_path)
    family = family_of(d)
    if family is None:
        raise ValueError(f"{str(d)!r} is not a VIDM or VideoFusion model directory (its "
                         f"{CONFIG_FILE} has no \"family\" key): load it with vdengine.load")
    try:
        config = config_class(family).from_json(d / CONFIG_FILE)
    except (ValueError, TypeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"invalid {d / CONFIG_FILE}: {msg}") from None
    return restore(build_model(config), d, device, dtype, ops="fused")


def load_family(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
                dtype: torch.dtype | None = None) -> Pipeline:
    """A VIDM or VideoFusion model directory as a pipeline: ``.generate(...)`` takes the
    keywords of vdengine.api.Pipeline.generate (see the module docstring for what differs)."""
    from vdengine.api import resolve_device, resolve_dtype

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    model = load_family_model(name_or_path, dev, dt)
    cls = VIDMPipeline if isinstance(model, VIDM) else VideoFusionPipeline
    return cls(model=model, schedule=model.config.noise_schedule(), device=dev, dtype=dt,
               name=str(name_or_path), sampler_options=dict(SAMPLER_OPTIONS))


def model_summaries() -> dict[str, dict[str, Any]]:
    """Shipped models → family, parameter count and how they were trained (training.json), for
    `vdengine info`."""
    from vdengine.models.loading import WEIGHTS_DIR, available_models

    out = {}
    for name in available_models():
        meta = load_metadata(WEIGHTS_DIR / name)
        out[name] = {
            "family": family_of(WEIGHTS_DIR / name) or "videoldm",
            "parameters": meta.get("parameters"),
            "steps": meta.get("steps"),
            "wall_time_s": meta.get("wall_time_s"),
            "commands": meta.get("commands"),
        }
    return out


# -------------------------------------------------------------------------------- pipelines
@dataclass
class VideoFusionPipeline(Pipeline):
    """A Pipeline over a VideoFusion denoiser whose initial noise is decomposed as in training
    and whose long videos default to SharedNoise(lam=λ) (b fixed, r_i varying)."""

    def generate(self, num_frames: int | None = None, *args: Any, long_video: Any = None,
                 **kwargs: Any):
        """Pipeline.generate; frames beyond the window use ``self.model.default_long_video``
        unless long_video= says otherwise."""
        window = self.spec.window
        if long_video is None and num_frames is not None and window is not None and (
                not isinstance(num_frames, bool) and isinstance(num_frames, int)
                and num_frames > window):
            long_video = self.model.default_long_video
        return super().generate(num_frames, *args, long_video=long_video, **kwargs)

    def _initial_noise(self, latents: Tensor | None, batch_size: int, frames: int,
                       gen: torch.Generator) -> Tensor:
        if latents is not None:
            return super()._initial_noise(latents, batch_size, frames, gen)
        from vdengine.longvideo.noise import NoiseSource

        source = NoiseSource(batch_size, self.latent_shape(None), gen, self.model.config.lam,
                             self.device, self.dtype)
        return source.draw(frames)


@dataclass
class VIDMPipeline(Pipeline):
    """A VIDM model (content + motion generators) behind Pipeline.generate's keywords.

    ``last_stats`` holds the per-network counters of the latest call (forwards, frame
    evaluations, batch rows of each forward)."""

    last_stats: FamilyStats | None = field(default=None, repr=False)

    @property
    def window(self) -> int:
        """The default video length (the training clip length). VIDM itself has no window: it
        generates any number of frames, one at a time."""
        return self.model.config.num_frames

    @torch.inference_mode()
    def generate(
        self,
        num_frames: int | None = None,
        steps: int = 8,
        sampler: str | None = None,
        batch_size: int = 1,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        guidance_scale: float | None = None,
        long_video: Any = None,
        output: str | Path | None = None,
        output_type: str | None = None,
        latents: Tensor | None = None,
        fps: float = DEFAULT_FPS,
        upscale: int = DEFAULT_UPSCALE,
        progress: bool = True,
        eta: float | None = None,
        spacing: str | None = None,
        **conditioning: Any,
    ) -> Video | Tensor | Path:
        """Sample `batch_size` videos of `num_frames` frames (default: the training length),
        each frame in `steps` evaluations of its generator. Arguments as Pipeline.generate;
        ``label=`` (and ``negative_label=``) conditions both generators; frames stream to
        ``output=`` as they are made."""
        num_frames = self.window if num_frames is None else num_frames
        check_int("num_frames", num_frames, min=1)
        check_int("steps", steps, min=1)
        check_int("batch_size", batch_size, min=1)
        check_int("upscale", upscale, min=1)
        if long_video is not None:
            raise ValueError("long_video= does not apply to VIDM: it generates frame by frame "
                             "in constant memory, so any num_frames works without a strategy")
        if latents is not None:
            raise ValueError("latents= does not apply to VIDM: it draws each frame's noise in "
                             "turn (use seed= or generator=)")
        sampler = self.sampler if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        if steps > self.schedule.num_train_timesteps:
            raise ValueError(f"steps must be <= {self.schedule.num_train_timesteps}, got {steps}")
        output_type = self._output_type(output_type, output)
        options = self._sampler_options(sampler, eta, spacing)
        gen = make_generator(seed, generator)
        guided = guidance_scale is not None
        cond, uncond = conditioning_rows(self.model.content, batch_size, guided, conditioning,
                                         self.device)
        stats = self.last_stats = FamilyStats()
        frames = sample_frames(
            self.model, num_frames=num_frames, batch_size=batch_size, steps=steps,
            sampler=sampler, sampler_options=options, cond=cond, uncond=uncond,
            guidance_scale=guidance_scale, generator=gen, device=self.device,
            dtype=self.dtype, stats=stats)
        frames = _progress(frames, num_frames, progress)
        if output_type != "np":
            return self._finish(torch.cat(list(frames), dim=1), output_type, fps, 16)
        from vdengine import longvideo

        chunks = (Video.from_tensor(f.float()).frames for f in frames)
        return longvideo.collect(chunks, output=output, fps=fps, upscale=upscale)


def _progress(frames: Iterator[Tensor], total: int, enabled: bool) -> Iterator[Tensor]:
    from tqdm import tqdm

    with tqdm(total=total, disable=not enabled, unit="frame", leave=False, desc="vidm") as bar:
        for f in frames:
            bar.update(1)
            yield f


# ------------------------------------------------------------------------------- counting
@dataclass
class EvalCounter:
    """Evaluations of one sub-network: forwards, frame evaluations (rows × frames) and the
    input shape of every forward."""

    forwards: int = 0
    frame_evals: int = 0
    shapes: list[tuple[int, ...]] = field(default_factory=list)


@contextlib.contextmanager
def count_evaluations(networks: dict[str, nn.Module]) -> Iterator[dict[str, EvalCounter]]:
    """Count the forwards of named sub-networks (e.g. ``model.networks()``) while the block
    runs: a forward hook on each records its first input's shape; a 4-D input [N, C, H, W] is
    N frame evaluations, a 5-D one [B, F, C, H, W] is B·F."""
    counters = {name: EvalCounter() for name in networks}
    handles = []
    for name, net in networks.items():
        def hook(module, args, kwargs, out, counter=counters[name]):
            x = args[0] if args else next(iter(kwargs.values()))
            counter.forwards += 1
            counter.shapes.append(tuple(x.shape))
            counter.frame_evals += x.shape[0] * (x.shape[1] if x.dim() == 5 else 1)
        handles.append(net.register_forward_hook(hook, with_kwargs=True))
    try:
        yield counters
    finally:
        for h in handles:
            h.remove()


__all__ = [
    "FAMILIES",
    "SAMPLER_OPTIONS",
    "EvalCounter",
    "VIDMPipeline",
    "VideoFusionPipeline",
    "build_model",
    "config_class",
    "count_evaluations",
    "family_of",
    "load_family",
    "load_family_model",
    "model_summaries",
    "save_family",
]

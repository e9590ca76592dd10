"""The user-facing entry points: `load()` a pipeline once, `generate()` videos from it."""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vdengine._validate import check_int
from vdengine.denoiser import Denoiser, DenoiserSpec, conditioning_rows
from vdengine.ops import _native
from vdengine.runtime import GRAPH_SUFFIXES
from vdengine.samplers import SAMPLERS
from vdengine.sampling import GuidedSampler
from vdengine.schedules import NoiseSchedule
from vdengine.video import Video

DEFAULT_FPS = 8
DEFAULT_UPSCALE = 1
OUTPUT_TYPES = ("np", "pt", "latent")


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks CUDA when torch sees a GPU and vdengine's CUDA kernels load, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    if device == "auto":
        use_cuda = torch.cuda.device_count() >= 1 and _native.cuda_available()
        return torch.device("cuda" if use_cuda else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}") from e
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}")
    if dev.type == "cuda" and torch.cuda.device_count() < 1:
        raise ValueError("device='cuda' was asked for but torch sees no CUDA device")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None means float32 on the CPU and bfloat16 on CUDA (fp16 NaNs). (vdengine's own models
    compute in CPU_MODEL_DTYPE on the CPU when no dtype is given: see _cached_pipeline.)"""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if isinstance(dtype, str):
        if dtype not in names:
            raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
        dtype = names[dtype]
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("dtype float16 is not supported on the CPU: its kernels take float32 "
                         "or bfloat16")
    return dtype


def make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """The call's CPU generator: `generator` as given, or a new one seeded with `seed` (0 when
    neither is given). Noise is drawn on the CPU so a seed gives the same video on any device."""
    if generator is not None:
        if seed is not None:
            raise ValueError("give seed= or generator=, not both")
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise TypeError("generator must be a CPU torch.Generator (noise is drawn on the CPU "
                            "so a seed gives the same video on every device)")
        return generator
    seed = 0 if seed is None else check_int("seed", seed, min=0)
    return torch.Generator().manual_seed(seed)


@dataclass
class Pipeline:
    """A loaded denoiser with its noise schedule and sampler defaults, reused across calls.

    Attributes:
        model: the denoiser (vdengine.Denoiser: VideoUNet, a diffusers adapter, an exported
            graph, or a user module).
        schedule: the noise schedule it was trained with.
        sampler: the default sampler (a diffusers scheduler's class decides it for its models).
        sampler_options: default keywords of the sampler (e.g. the timestep spacing).
        vae: a decoder of latents to frames, or None (a 3-channel denoiser is pixel space).
    """

    model: Denoiser
    schedule: NoiseSchedule
    device: torch.device
    dtype: torch.dtype
    name: str
    backend: str = "torch"
    sampler: str = "ddim"
    sampler_options: dict[str, Any] = field(default_factory=lambda: {"spacing": "trailing"})
    vae: Any = None

    @property
    def spec(self) -> DenoiserSpec:
        return self.model.spec

    @property
    def window(self) -> int | None:
        """Frames the denoiser sees at once (None: any number)."""
        return self.spec.window

    @property
    def pixel_space(self) -> bool:
        """True when samples are frames themselves (no VAE, 3 channels)."""
        return self.vae is None and self.spec.channels == 3

    def latent_shape(self, latents: Tensor | None) -> tuple[int, int, int]:
        """(C, H, W) of one latent frame."""
        spec = self.spec
        if spec.sample_size is None:
            if latents is None:
                raise ValueError(f"model {spec.name!r} has no fixed sample size: pass latents=")
            return tuple(latents.shape[2:]) if spec.layout == "BFCHW" else (
                latents.shape[1], *latents.shape[3:])
        return (spec.channels, *spec.sample_size)

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
        min_guidance_scale: float | None = None,
        max_guidance_scale: float | None = None,
        long_video: Any = None,
        output: str | Path | None = None,
        output_type: str | None = None,
        latents: Tensor | None = None,
        fps: float = DEFAULT_FPS,
        upscale: int = DEFAULT_UPSCALE,
        progress: bool = True,
        eta: float | None = None,
        spacing: str | None = None,
        decode_chunk_size: int = 16,
        **conditioning: Any,
    ) -> Video | Tensor | Path:
        """Sample `batch_size` videos of `num_frames` frames in `steps` denoiser evaluations.

        Args:
            num_frames: frames per video (default: the model's window, or 16). Beyond the
                window, a `long_video` strategy is needed.
            sampler: "ddim", "dpmpp_2m", "ddpm", ... (default: the pipeline's).
            seed / generator: the random draws (a seed, or a CPU torch.Generator; seed 0 when
                neither is given). Same seed, same video, on any device.
            guidance_scale: classifier-free guidance towards the conditioning; conditional and
                unconditional rows share one forward per step.
            min_guidance_scale, max_guidance_scale: per-frame guidance instead, linear from the
                first frame to the last (Stable Video Diffusion's pipeline does this).
            long_video: a strategy of vdengine.longvideo (Autoregressive(...), Sliding(...),
                Keyframes(...), SharedNoise(...)) or its name ("sliding",
                "autoregressive+shared_noise", ...). See docs/long_videos.md.
            output: write the video to this .mp4/.gif/.png (streamed window by window for long
                videos; temporary name, renamed when complete) and return its Path.
            output_type: "np" (a Video of uint8 frames; the default when samples can be turned
                into frames), "pt" (float frames [B, F, 3, H, W] in [0, 1]) or "latent" (the
                samples in the model's native layout; the default without a VAE for latent
                models).
            latents: the initial noise in the model's native layout ([B, F, C, H, W] or
                [B, C, F, H, W], see spec.layout) instead of drawing it.
            eta: DDIM's η (only samplers that use it accept it).
            spacing: timestep spacing ("trailing", "leading", ...; default: the pipeline's).
            decode_chunk_size: frames the VAE decodes at once (models with a VAE).
            **conditioning: the model's conditioning inputs, e.g. ``label=2`` (an int or one per
                video) for vdengine's models, or ``prompt_embeds=`` for diffusers models, and
                their ``negative_...`` values for guidance.

        Returns a Video, a tensor (output_type "pt"/"latent"), or the written Path.
        """
        spec = self.spec
        window = spec.window
        if num_frames is None:  # the window, the latents' frames, or 16
            num_frames = window or _latent_frames(latents, spec.layout) or 16
        check_int("num_frames", num_frames, min=1)
        check_int("steps", steps, min=1)
        check_int("batch_size", batch_size, min=1)
        check_int("upscale", upscale, min=1)
        sampler = self.sampler if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        if steps > self.schedule.num_train_timesteps:
            raise ValueError(f"steps must be <= {self.schedule.num_train_timesteps}, got {steps}")
        output_type = self._output_type(output_type, output)
        options = self._sampler_options(sampler, eta, spacing)
        gen = make_generator(seed, generator)
        chunk = check_int("decode_chunk_size", decode_chunk_size, min=1)
        frames = window if window is not None else num_frames  # sampled per window
        guidance_scale = _guidance(guidance_scale, min_guidance_scale, max_guidance_scale,
                                   frames)
        if isinstance(guidance_scale, Tensor):
            guidance_scale = guidance_scale.to(self.device)
        guided = guidance_scale is not None
        cond, uncond = conditioning_rows(self.model, batch_size, guided, conditioning,
                                         self.device)
        loop = GuidedSampler(self.model, self.schedule, steps=steps, sampler=sampler,
                             sampler_options=options, cond=cond, uncond=uncond,
                             guidance_scale=guidance_scale, generator=gen)
        if long_video is not None:
            return self._generate_long(loop, long_video, num_frames, batch_size, output,
                                       output_type, latents, fps, upscale, progress, chunk)
        limit = spec.frame_limit
        if limit is not None and num_frames > limit:
            raise ValueError(f"num_frames={num_frames} exceeds model {spec.name!r}'s window of "
                             f"{limit} frames; long videos need long_video=... (a strategy "
                             "of vdengine.longvideo)")
        if output is not None:
            from vdengine.io import check_output_path

            check_output_path(output)  # before sampling
        # A fixed-window model samples its whole window (what it was trained on) and the first
        # num_frames frames are kept; others sample exactly num_frames.
        x = self._initial_noise(latents, batch_size, frames, gen)
        samples = loop.sample(x)[:, :num_frames]
        result = self._finish(samples, output_type, fps, chunk)
        if output is not None:
            return result.save(output, upscale=upscale)
        return result

    # ------------------------------------------------------------------ helpers
    def _output_type(self, output_type: str | None, output) -> str:
        decodable = self.pixel_space or self.vae is not None
        if output_type is None:
            output_type = "np" if decodable else "latent"
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if output_type != "latent" and not decodable:
            raise ValueError(f"output_type={output_type!r} needs a VAE to decode the latents of "
                             f"model {self.spec.name!r}: load(..., vae=...) or "
                             "output_type='latent'")
        if output is not None and output_type != "np":
            raise ValueError(f"output= writes frames: use output_type='np' (or leave it unset), "
                             f"got {output_type!r}")
        return output_type

    def _sampler_options(self, sampler: str, eta, spacing) -> dict[str, Any]:
        options = dict(self.sampler_options)
        if spacing is not None:
            options["spacing"] = spacing
        params = inspect.signature(SAMPLERS[sampler]).parameters
        if eta is not None:
            if "eta" not in params:
                raise ValueError(f"eta applies only to samplers that use it (ddim), not "
                                 f"{sampler!r}")
            options["eta"] = eta
        # The denoiser's spec gives the prediction type; a scheduler's options may repeat it.
        return {k: v for k, v in options.items() if k in params and k != "prediction_type"}

    def initial_noise(self, batch_size: int = 1, num_frames: int | None = None, *,
                      seed: int | None = None, generator: torch.Generator | None = None
                      ) -> Tensor:
        """The initial noise `generate()` draws for these arguments, in the model's native
        layout, on the CPU: pass it (or rows of several such draws) back as ``latents=``.
        A fixed-window model samples its whole window, whatever num_frames is."""
        window = self.spec.window
        frames = window if window is not None else (16 if num_frames is None else num_frames)
        noise = self._draw_noise(batch_size, frames, make_generator(seed, generator))
        return noise if self.spec.layout == "BFCHW" else noise.permute(0, 2, 1, 3, 4)

    def _draw_noise(self, batch_size: int, frames: int, gen: torch.Generator) -> Tensor:
        """The one draw of initial noise: float32 [B, F, C, H, W] on the CPU, so a seed gives the
        same video on every device."""
        return torch.randn((batch_size, frames, *self.latent_shape(None)), generator=gen,
                           dtype=torch.float32)

    def _initial_noise(self, latents: Tensor | None, batch_size: int, frames: int,
                       gen: torch.Generator) -> Tensor:
        """[B, F, C, H, W] on the device: the user's latents, or seeded noise drawn on the CPU."""
        if latents is None:
            return self._draw_noise(batch_size, frames, gen).to(self.device, self.dtype)
        c, h, w = self.latent_shape(latents)
        layout = self.spec.layout
        want = (batch_size, frames, c, h, w) if layout == "BFCHW" else (
            batch_size, c, frames, h, w)
        if not isinstance(latents, Tensor) or tuple(latents.shape) != want:
            got = tuple(latents.shape) if isinstance(latents, Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a {layout} tensor of shape {want}, got {got}")
        x = latents if layout == "BFCHW" else latents.permute(0, 2, 1, 3, 4)
        return x.to(self.device, self.dtype)

    def _to_frames(self, samples: Tensor, chunk: int = 16) -> Tensor:
        """Samples [B, F, C, H, W] → float frames [B, F, 3, H', W'] in [−1, 1]."""
        if self.vae is None:
            return samples
        from vdengine.adapters.diffusers import decode_latents

        return decode_latents(self.vae, samples, chunk)

    def _finish(self, samples: Tensor, output_type: str, fps: float, chunk: int
                ) -> Video | Tensor:
        if output_type == "latent":
            return samples if self.spec.layout == "BFCHW" else samples.permute(0, 2, 1, 3, 4)
        frames = self._to_frames(samples, chunk)
        if output_type == "pt":
            return ((frames.float() + 1) / 2).clamp(0, 1)
        return Video.from_tensor(frames.float().cpu(), fps=fps)

    def _generate_long(self, loop: GuidedSampler, long_video, num_frames: int,
                       batch_size: int, output, output_type: str, latents, fps, upscale,
                       progress, chunk: int):
        from vdengine import longvideo

        if latents is not None:
            raise ValueError("latents= is for one window; long videos draw their noise "
                             "window by window (use seed= or generator=)")
        if output_type != "np":
            raise ValueError(f"long videos are streamed as frames: output_type must be 'np', "
                             f"got {output_type!r}")
        strategy = longvideo.as_strategy(long_video).resolve(self.spec)

        def decode(latents_chunk: Tensor):
            return Video.from_tensor(self._to_frames(latents_chunk, chunk).float()).frames

        chunks = longvideo.generate_chunks(
            loop, strategy, num_frames, batch_size, self.latent_shape(None),
            device=self.device, dtype=self.dtype, progress=progress, decode=decode)
        return longvideo.collect(chunks, output=output, fps=fps, upscale=upscale)


def _latent_frames(latents: Any, layout: str) -> int | None:
    if not isinstance(latents, Tensor) or latents.dim() != 5:
        return None
    return int(latents.shape[1] if layout == "BFCHW" else latents.shape[2])


def _guidance(scale, min_scale, max_scale, frames: int) -> float | Tensor | None:
    """One guidance scale, or per-frame scales linspace(min, max, frames) as [frames]."""
    from vdengine._validate import check_real

    if min_scale is None and max_scale is None:
        return None if scale is None else check_real("guidance_scale", scale)
    if scale is not None:
        raise ValueError("give guidance_scale= or min_guidance_scale=/max_guidance_scale=, "
                         "not both")
    if min_scale is None or max_scale is None:
        raise ValueError("per-frame guidance needs both min_guidance_scale= and "
                         "max_guidance_scale=")
    lo = check_real("min_guidance_scale", min_scale)
    hi = check_real("max_guidance_scale", max_scale)
    return torch.linspace(lo, hi, frames)


# ---------------------------------------------------------------------------- loading
def _pipeline_for_denoiser(model: Denoiser, device, dtype, name: str, backend: str) -> Pipeline:
    return Pipeline(model=model, schedule=model.spec.schedule, device=device, dtype=dtype,
                    name=name, backend=backend)


#: What vdengine's own video denoisers compute in on the CPU when no dtype is asked for: bfloat16
#: (AVX-512 BF16 convolutions, ~2x float32) with float32 latents, chosen by measurement
#: (benchmarks/results/quality-dtype-cpu.json, latency-cpu.json; README "CPU speed").
CPU_MODEL_DTYPE = torch.bfloat16


def _compiled(net: torch.nn.Module) -> torch.nn.Module:
    """torch.compile of a denoiser module for inference: Inductor with frozen weights (constant
    folding, oneDNN weight prepacking on the CPU); vdengine's fused ops stay custom ops inside the
    graph. Compiles on the first call of each input shape (minutes on a small CPU); Inductor's
    on-disk cache makes later processes start faster."""
    return torch.compile(net, dynamic=False, options={"freezing": True})  # forwards .spec


@functools.lru_cache(maxsize=4)
def _cached_pipeline(model: str, device: torch.device, dtype: torch.dtype, backend: str | None,
                     check_against: str | None, stamp: tuple | None,
                     compile: bool = False, dtype_given: bool = True) -> Pipeline:
    # stamp: (size, mtime) of a graph file, so a re-exported file is a new cache entry.
    if Path(model).suffix in GRAPH_SUFFIXES or backend not in (None, "torch"):
        from vdengine.runtime import load_graph

        net = load_graph(model, device, dtype, backend=backend, check_against=check_against)
        return _pipeline_for_denoiser(net, device, dtype, model, getattr(net, "backend", "graph"))
    if backend not in (None, "torch"):
        raise ValueError(f"backend={backend!r} runs an exported graph: pass its .onnx or engine "
                         f"file as the model, got {model!r}")
    if check_against is not None:
        raise ValueError("check_against= applies to exported graphs (.onnx, .engine, .plan)")
    from vdengine.models import load_model
    from vdengine.models.families import family_of, load_family

    if family_of(model) is not None:  # VIDM / VideoFusion (SEEDS.md)
        if compile:
            raise ValueError("compile=True applies to single-network models; the VIDM and "
                             "VideoFusion pipelines run several networks")
        return load_family(model, device, dtype)
    if device.type == "cpu" and not dtype_given:
        dtype = CPU_MODEL_DTYPE
    net = load_model(model, device=device, dtype=dtype).set_ops("fused")
    if device.type == "cpu":
        net.set_channels_last(True)  # oneDNN's conv layout, read by the fused ops as it is
    if compile:
        net = _compiled(net)
    # On the CPU the sampler keeps float32 latents whatever the model computes in: a bfloat16
    # model then only rounds its own activations, not the state of every step.
    latents = torch.float32 if device.type == "cpu" else dtype
    return _pipeline_for_denoiser(net, device, latents, model, "torch-compiled" if compile else
                                  "torch")


def _is_diffusers(model: Any) -> bool:
    """A diffusers model instance, or a diffusers model / pipeline directory."""
    if isinstance(model, torch.nn.Module):
        return type(model).__module__.startswith("diffusers.")
    if not isinstance(model, (str, os.PathLike)) or not Path(model).is_dir():
        return False
    d = Path(model)
    return (d / "model_index.json").is_file() or (
        (d / "config.json").is_file() and '"_class_name"' in (d / "config.json").read_text())


def _load_diffusers(model: Any, scheduler: Any, vae: Any, device: torch.device,
                    dtype: torch.dtype) -> Pipeline:
    from vdengine.adapters.diffusers import load_diffusers
    from vdengine.samplers import from_diffusers

    denoiser, scheduler, vae = load_diffusers(model, scheduler, vae, device=device, dtype=dtype)
    plan = from_diffusers(scheduler)
    options = {k: v for k, v in plan.sampler_kwargs().items() if k != "prediction_type"}
    return Pipeline(model=denoiser, schedule=plan.schedule, device=device, dtype=dtype,
                    name=denoiser.spec.name, backend="diffusers", sampler=plan.sampler,
                    sampler_options=options, vae=vae)


def load(model: Any = "default", device: str | torch.device = "auto",
         dtype: str | torch.dtype | None = None, backend: str | None = None,
         check_against: str | Path | None = None, scheduler: Any = None,
         vae: Any = None, compile: bool = False) -> Pipeline:
    """Load a denoiser once, as a Pipeline to generate from.

    model: a shipped model's name (see `vdengine info`), a vdengine model directory, an exported
    graph file (".onnx": onnxruntime; ".engine"/".plan": TensorRT — the file alone is enough, it
    carries its config), or a module implementing vdengine.Denoiser (used as is, on its device).
    It also takes a diffusers video UNet (``UNet3DConditionModel``, ``UNetMotionModel``,
    ``UNetSpatioTemporalConditionModel``) as an instance, a model directory or a pipeline
    directory (read offline), accelerated with vdengine's kernels (docs/diffusers.md);
    ``scheduler=`` (a diffusers scheduler, its config or a path) and ``vae=`` apply to those.
    backend: overrides the runtime the graph's suffix picks ("onnxruntime", "tensorrt").
    check_against: a model directory an exported graph must match (config and weights).
    compile: run the PyTorch denoiser through torch.compile (Inductor, frozen weights), vdengine's
    ops inside the graph; the first call of each batch size compiles (minutes on a small CPU),
    which only pays off for a process that generates many times (benchmarks/latency.py).
    Repeated calls with the same name/path and arguments return the same Pipeline (no reload;
    diffusers models and modules are not cached).
    """
    dev = resolve_device(device)
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be a bool, got {type(compile).__name__}")
    if _is_diffusers(model):
        if backend is not None or check_against is not None:
            raise ValueError("backend= and check_against= apply to exported graph files, not "
                             "to diffusers models")
        pipe = _load_diffusers(model, scheduler, vae, dev, resolve_dtype(dtype, dev))
        if compile:
            pipe.model = _compiled(pipe.model)
        return pipe
    if scheduler is not None or vae is not None:
        raise ValueError("scheduler= and vae= apply to diffusers models (an instance or a "
                         f"diffusers directory), not to {type(model).__name__} {model!r}")
    if isinstance(model, Denoiser):
        if backend is not None or check_against is not None:
            raise ValueError("backend= and check_against= apply to exported graph files, not "
                             "to a module")
        net = _compiled(model) if compile and isinstance(model, torch.nn.Module) else model
        return _pipeline_for_denoiser(net, dev, resolve_dtype(dtype, dev), model.spec.name,
                                      "module")
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a name, a path or a vdengine.Denoiser module, got "
                        f"{type(model).__name__}")
    path = str(model)
    stamp = None
    dt = resolve_dtype(dtype, dev)
    if Path(path).suffix in GRAPH_SUFFIXES or backend not in (None, "torch"):
        p = Path(path).expanduser()
        if not p.is_file():
            raise ValueError(f"exported graph {path!r} does not exist")
        if compile:
            raise ValueError("compile=True applies to PyTorch models, not to exported graphs")
        path, stamp = str(p.resolve()), (p.stat().st_size, p.stat().st_mtime_ns)
        # The engine keeps x in float32 unless asked: the graph casts to its own I/O dtype.
        dt = torch.float32 if dtype is None else dt
    ref = None if check_against is None else str(check_against)
    return _cached_pipeline(path, dev, dt, backend, ref, stamp, compile, dtype is not None)


def generate(model: Any = "default", *, device: str | torch.device = "auto",
             dtype: str | torch.dtype | None = None, backend: str | None = None,
             check_against: str | Path | None = None, scheduler: Any = None, vae: Any = None,
             compile: bool = False, **kwargs: Any) -> Video | Tensor | Path:
    """``load(model, device, dtype, backend, check_against, scheduler, vae, compile)
    .generate(**kwargs)``: see load() and Pipeline.generate for the arguments."""
    return load(model, device=device, dtype=dtype, backend=backend, check_against=check_against,
                scheduler=scheduler, vae=vae, compile=compile).generate(**kwargs)


__all__ = ["Pipeline", "generate", "load", "make_generator"]

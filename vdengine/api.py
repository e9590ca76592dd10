"""The user-facing entry points: `load()` a pipeline once, `generate()` videos from it."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vdengine.models import VideoUNet
from vdengine.ops import _native
from vdengine.runtime import check_backend, load_denoiser
from vdengine.samplers import SAMPLERS, get_sampler
from vdengine.schedules import NoiseSchedule
from vdengine.video import Video

DEFAULT_FPS = 8


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks CUDA when a GPU and vdengine's CUDA kernels are both there, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    if device == "auto":
        use_cuda = torch.cuda.is_available() and _native.cuda_available()
        return torch.device("cuda" if use_cuda else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA device")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None means float32 on the CPU (its kernels are float32) and bfloat16 on CUDA (fp16 NaNs)."""
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
    if device.type == "cpu" and dtype != torch.float32:
        raise ValueError(f"dtype {dtype} is not supported on the CPU: its kernels are float32")
    return dtype


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


@dataclass
class Pipeline:
    """A loaded denoiser with its noise schedule, reusable across generate() calls."""

    model: VideoUNet  # or a vdengine.runtime graph denoiser: the same call and .config
    schedule: NoiseSchedule
    device: torch.device
    dtype: torch.dtype
    name: str
    backend: str = "torch"  # which runtime runs `model` (vdengine.runtime.BACKENDS)

    @property
    def config(self):
        return self.model.config

    @property
    def window(self) -> int:
        """Frames the denoiser sees at once."""
        return self.model.config.window

    def _labels(self, label, batch_size: int) -> torch.Tensor | None:
        num_classes = self.config.num_classes
        if label is None:
            return None
        if num_classes == 0:
            raise ValueError(f"label was given but model {self.name!r} is unconditional")
        labels = [label] * batch_size if isinstance(label, int) else list(label)
        if len(labels) != batch_size:
            raise ValueError(f"label must be an int or {batch_size} ints (one per video), "
                             f"got {len(labels)}")
        for value in labels:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_classes:
                raise ValueError(f"label must be in [0, {num_classes}), got {value!r}")
        return torch.tensor(labels, dtype=torch.long, device=self.device)

    def denoiser(self, labels: torch.Tensor | None, guidance_scale: float | None):
        """The model callable the samplers drive, with the conditioning stacked for guidance."""
        null = self.config.num_classes
        if guidance_scale is not None:
            # One forward for both halves: [uncond; cond] on the batch axis.
            labels = torch.cat([torch.full_like(labels, null), labels])

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            # Every row shares the step's timestep: pass one value so the model builds its
            # PosGN tables once ([F] rows, broadcast over videos and guidance halves).
            return self.model(x, t[:1], label=labels)

        return denoise

    def initial_noise(self, batch_size: int, num_frames: int, generator: torch.Generator):
        """Seeded noise drawn on the CPU so the same seed gives the same video on every device."""
        c = self.config
        shape = (batch_size, num_frames, c.channels, c.image_size, c.image_size)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        return noise.to(self.device, self.dtype)

    @torch.inference_mode()
    def generate(
        self,
        num_frames: int = 16,
        steps: int = 8,
        sampler: str = "ddim",
        batch_size: int = 1,
        seed: int = 0,
        guidance_scale: float | None = None,
        label: int | Sequence[int] | None = None,
        progress: bool = True,
        eta: float = 0.0,
        spacing: str = "trailing",
        fps: int = DEFAULT_FPS,
        long_video: str | None = None,
        output: str | Path | None = None,
        upscale: int = 1,
        context_frames: int | None = None,
        context_guidance: float | None = None,
        window: int | None = None,
        stride: int | None = None,
        shared_noise_lambda: float | None = None,
        window_batch: int | None = None,
        blend: str | None = None,
    ) -> Video | Path:
        """Sample `batch_size` videos of `num_frames` frames in `steps` denoiser evaluations.

        Returns a Video whose frames are uint8 [batch_size, num_frames, H, W, 3], or, with
        `output` (.mp4/.gif/.png, `upscale`d), the written Path.

        Long videos (num_frames beyond the model's window; see vdengine.longvideo and
        docs/long_videos.md): `long_video` is "autoregressive", "sliding", "keyframes",
        "shared_noise", or one of the first three + "+shared_noise". Options (None = the
        strategy's default; an option the strategy does not use is an error): `context_frames`
        S (2) and `context_guidance` s (1.5) for autoregressive/keyframes, `window` L (the
        model's), `stride` (L // 2) and `blend` ("triangular" | "uniform") for sliding,
        `shared_noise_lambda` λ (0.5), `window_batch` (windows per forward for sliding /
        keyframe gaps, 2). With `output`, frames are encoded
        as windows finish and released: memory does not grow with num_frames.
        """
        _check_positive_int("num_frames", num_frames)
        _check_positive_int("steps", steps)
        _check_positive_int("batch_size", batch_size)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        if steps > self.schedule.num_train_timesteps:
            raise ValueError(f"steps must be <= {self.schedule.num_train_timesteps}, got {steps}")
        long_options = {"context_frames": context_frames, "context_guidance": context_guidance,
                        "window": window, "stride": stride,
                        "shared_noise_lambda": shared_noise_lambda, "window_batch": window_batch,
                        "blend": blend}
        if long_video is None:
            for key, value in long_options.items():
                if value is not None:
                    raise ValueError(f"{key} is a long-video option: give long_video=... too")
            if num_frames > self.window:
                raise ValueError(
                    f"num_frames={num_frames} exceeds model {self.name!r}'s window of "
                    f"{self.window} frames; long videos need a long_video strategy")
        labels = self._labels(label, batch_size)
        if guidance_scale is not None and labels is None:
            raise ValueError("guidance_scale needs a label to guide towards (label=...)")
        if long_video is not None:
            from vdengine import longvideo

            opts = longvideo.LongVideoOptions.resolve(long_video, self.config, **long_options)
            chunks = longvideo.generate_chunks(
                self, num_frames, opts, steps=steps, sampler=sampler, batch_size=batch_size,
                seed=seed, labels=labels, guidance_scale=guidance_scale, eta=eta,
                spacing=spacing, progress=progress)
            return longvideo.collect(chunks, output=output, fps=fps, upscale=upscale)
        if output is not None:
            from vdengine.io import check_output_path

            check_output_path(output)  # before sampling
        generator = torch.Generator().manual_seed(int(seed))
        x = self.initial_noise(batch_size, self.window, generator)
        sample_fn = get_sampler(sampler)
        kwargs = {"eta": eta} if sampler == "ddim" else {}
        video = sample_fn(
            self.denoiser(labels, guidance_scale), x, self.schedule, steps,
            spacing=spacing, prediction_type=self.config.prediction_type,
            guidance_scale=guidance_scale, generator=generator,
            disable=not progress, **kwargs,
        )
        result = Video.from_tensor(video[:, :num_frames].float().cpu(), fps=fps)
        return result if output is None else result.save(output, upscale=upscale)


@functools.lru_cache(maxsize=4)
def _cached_pipeline(model: str, device: torch.device, dtype: torch.dtype,
                     backend: str = "torch", onnx: str | None = None,
                     stamp: tuple | None = None) -> Pipeline:
    # stamp (size, mtime) of the onnx file: a re-exported file is a new cache entry.
    net = load_denoiser(model, device, dtype, backend=backend, path=onnx)
    schedule = NoiseSchedule(kind=net.config.schedule,
                             num_train_timesteps=net.config.num_train_timesteps)
    return Pipeline(model=net, schedule=schedule, device=device, dtype=dtype, name=str(model),
                    backend=backend)


def load(model: str | Path = "default", device: str | torch.device = "auto",
         dtype: str | torch.dtype | None = None, backend: str = "torch",
         onnx: str | Path | None = None) -> Pipeline:
    """Load a shipped model by name (see `vdengine info`) or a model directory, once.

    backend: "torch" (the model on vdengine's fused ops), "onnxruntime" (onnx= an .onnx file
    written by `vdengine export` / vdengine.export_onnx from this model) or "tensorrt" (onnx= an
    engine built from one by export/build_trt_engine.py; untested here). See vdengine.runtime.
    Repeated calls with the same arguments return the same Pipeline (no reload).
    """
    dev = resolve_device(device)
    backend, onnx = check_backend(backend, onnx)
    stamp = None if onnx is None else (os.stat(onnx).st_size, os.stat(onnx).st_mtime_ns)
    return _cached_pipeline(str(model), dev, resolve_dtype(dtype, dev), backend, onnx, stamp)


def generate(
    model: str | Path = "default",
    num_frames: int = 16,
    steps: int = 8,
    sampler: str = "ddim",
    batch_size: int = 1,
    seed: int = 0,
    guidance_scale: float | None = None,
    label: int | Sequence[int] | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    progress: bool = True,
    long_video: str | None = None,
    output: str | Path | None = None,
    upscale: int = 1,
    context_frames: int | None = None,
    context_guidance: float | None = None,
    window: int | None = None,
    stride: int | None = None,
    shared_noise_lambda: float | None = None,
    window_batch: int | None = None,
    blend: str | None = None,
    backend: str = "torch",
    onnx: str | Path | None = None,
) -> Video | Path:
    """Generate videos with a shipped or local model; see Pipeline.generate.

    backend / onnx: the denoiser's runtime, see load().
    Returns a Video, or the written Path when `output` is given (long videos are streamed)."""
    return load(model, device, dtype, backend=backend, onnx=onnx).generate(
        num_frames=num_frames, steps=steps, sampler=sampler, batch_size=batch_size, seed=seed,
        guidance_scale=guidance_scale, label=label, progress=progress, long_video=long_video,
        output=output, upscale=upscale, context_frames=context_frames,
        context_guidance=context_guidance, window=window, stride=stride,
        shared_noise_lambda=shared_noise_lambda, window_batch=window_batch, blend=blend)

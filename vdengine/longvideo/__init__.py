"""Long videos: num_frames far beyond the model's window, in memory that does not grow with it.

Strategies (``generate(..., long_video=...)``; each is a small module here):

- ``"autoregressive"`` (autoregressive.py): windows of L frames, each conditioned on the last S
  generated frames through the context mask, with context guidance (Video LDM prediction).
- ``"shared_noise"`` (noise.py): VideoFusion's decomposed initial noise √λ·b + √(1−λ)·r_i with
  one base noise b for the whole video. Alone: independent back-to-back windows; combined:
  ``"autoregressive+shared_noise"``, ``"sliding+shared_noise"``, ``"keyframes+shared_noise"``.
- ``"sliding"`` (sliding.py): overlapping windows denoised jointly at every step and averaged
  where they overlap (Gen-L-Video / MultiDiffusion along time).
- ``"keyframes"`` (keyframes.py): keyframes every L − 1 frames, then every gap filled with both
  ends known (Video LDM interpolation).

`generate_chunks` yields finished frames, uint8 [B, n, H, W, 3], as windows finish, so the
caller writes them (vdengine.io.VideoWriter) and drops them; Pipeline.generate does exactly that
when given ``output=``. All B videos of a call share every denoiser forward (batch axis).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from vdengine.longvideo import autoregressive, keyframes, noise, sliding
from vdengine.longvideo.common import (
    CONTEXT_STRATEGIES,
    STRATEGIES,
    WINDOW_STRATEGIES,
    Denoiser,
    LongVideoOptions,
    LongVideoStats,
    parse_strategy,
)
from vdengine.longvideo.noise import NoiseSource

__all__ = [
    "CONTEXT_STRATEGIES",
    "STRATEGIES",
    "WINDOW_STRATEGIES",
    "Denoiser",
    "LongVideoOptions",
    "LongVideoStats",
    "NoiseSource",
    "boundaries",
    "collect",
    "generate_chunks",
    "parse_strategy",
]

_MODULES = {
    "autoregressive": autoregressive,
    "shared_noise": noise,
    "sliding": sliding,
    "keyframes": keyframes,
}


def boundaries(opts: LongVideoOptions, num_frames: int) -> list[int]:
    """Frames f whose pair (f − 1, f) straddles two denoising windows (for seam measures)."""
    L = opts.window
    if opts.strategy == "autoregressive":
        return autoregressive.boundaries(num_frames, L, opts.context_frames)
    if opts.strategy == "sliding":
        return sliding.boundaries(num_frames, L, opts.stride)
    if opts.strategy == "keyframes":
        return keyframes.boundaries(num_frames, L)
    return [s for s in noise.plan(num_frames, L) if 0 < s < num_frames]


def to_uint8(x: Tensor) -> np.ndarray:
    """float [B, n, C, H, W] in [−1, 1] → uint8 [B, n, H, W, 3] on the host."""
    from vdengine.video import Video

    return Video.from_tensor(x).frames


@torch.inference_mode()
def generate_chunks(
    pipe,
    num_frames: int,
    options: LongVideoOptions,
    *,
    steps: int = 8,
    sampler: str = "ddim",
    batch_size: int = 1,
    seed: int = 0,
    labels: Tensor | None = None,
    guidance_scale: float | None = None,
    eta: float = 0.0,
    spacing: str = "trailing",
    progress: bool = False,
    stats: LongVideoStats | None = None,
) -> Iterator[np.ndarray]:
    """Generate `batch_size` long videos of `num_frames` frames, chunk by chunk.

    Args:
        pipe: a loaded `vdengine.api.Pipeline`.
        options: a resolved `LongVideoOptions` (see LongVideoOptions.resolve).
        labels: long [batch_size] class labels, or None; guidance_scale needs them.
        stats: counters to fill (frame evaluations, forwards, windows).
        The rest as Pipeline.generate (arguments are assumed validated there).

    Yields uint8 frames [batch_size, n, H, W, 3], in order, n >= 1, Σn = num_frames. Random
    draws come from one CPU generator seeded with `seed`, window after window.
    """
    stats = LongVideoStats() if stats is None else stats
    cfg = pipe.config
    generator = torch.Generator().manual_seed(int(seed))
    source = NoiseSource(batch_size, (cfg.channels, cfg.image_size, cfg.image_size), generator,
                         options.noise_lambda, pipe.device, pipe.dtype)
    den = Denoiser(pipe, steps=steps, sampler=sampler, eta=eta, spacing=spacing,
                   guidance_scale=guidance_scale, generator=generator, stats=stats)
    run = _MODULES[options.strategy].generate_latents
    with tqdm(total=num_frames, disable=not progress, unit="frame", leave=False,
              desc=options.name) as bar:
        for latents in run(den, source, num_frames, options, labels):
            frames = to_uint8(latents)
            del latents
            stats.output_frames += frames.shape[1]
            bar.update(frames.shape[1])
            yield frames


def collect(chunks: Iterator[np.ndarray], *, output=None, fps: float = 8, upscale: int = 1):
    """Drain `generate_chunks`: into a Video (output=None: the frames are held, uint8), or
    streamed into `output` (.mp4/.gif/.png) with each chunk released once written; returns the
    Path. The writer is opened (and the path validated) before the first window is sampled; on
    any error, the temporary file is removed and nothing appears under `output`."""
    from vdengine.io import VideoWriter
    from vdengine.video import Video

    if output is None:
        parts = list(chunks)
        return Video(np.concatenate(parts, axis=1), fps=fps)
    writer = VideoWriter(output, fps=fps, upscale=upscale)
    try:
        with writer:
            for frames in chunks:
                writer.write(frames)
                del frames
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return writer.path

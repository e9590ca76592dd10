"""Long videos: num_frames far beyond the model's window, in memory that does not grow with it.

Strategies are objects passed as ``generate(long_video=...)`` (strategies.py), each sampled by
its own small module:

- ``Autoregressive(context_frames=2, context_guidance=1.5)`` (autoregressive.py): windows of L
  frames, each conditioned on the last S generated frames through the context mask, with
  context guidance (Video LDM prediction). Needs a model with context conditioning.
- ``SharedNoise(lam=0.5)`` (noise.py): VideoFusion's decomposed initial noise √λ·b + √(1−λ)·r_i
  with one base noise b for the whole video. Alone: independent back-to-back windows; as
  ``noise=`` of another strategy: that strategy's initial noise.
- ``Sliding(stride=None, blend="triangular")`` (sliding.py): overlapping windows denoised
  jointly at every step and averaged where they overlap (Gen-L-Video / MultiDiffusion along
  time). Works for every model type.
- ``Keyframes(...)`` (keyframes.py): keyframes every L − 1 frames, then every gap filled with both
  ends known (Video LDM interpolation). Needs context conditioning.

A name is a shorthand for the defaults: ``long_video="sliding"``, ``"autoregressive+shared_noise"``.

`generate_chunks` yields finished frames (or latents) as windows finish, so the caller writes
them (vdengine.io.VideoWriter) and drops them; Pipeline.generate does exactly that when given
``output=``. All B videos of a call share every denoiser forward (batch axis).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from vdengine.longvideo import autoregressive, keyframes, noise, sliding
from vdengine.longvideo.noise import NoiseSource
from vdengine.longvideo.strategies import (
    BLENDS,
    STRATEGIES,
    Autoregressive,
    Keyframes,
    SharedNoise,
    Sliding,
    Strategy,
    as_strategy,
)
from vdengine.sampling import GuidedSampler

__all__ = [
    "BLENDS",
    "STRATEGIES",
    "Autoregressive",
    "Keyframes",
    "NoiseSource",
    "SharedNoise",
    "Sliding",
    "Strategy",
    "as_strategy",
    "boundaries",
    "collect",
    "generate_chunks",
]

_MODULES = {
    Autoregressive: autoregressive,
    SharedNoise: noise,
    Sliding: sliding,
    Keyframes: keyframes,
}


def boundaries(strategy: Strategy, num_frames: int) -> list[int]:
    """Frames f whose pair (f − 1, f) straddles two denoising windows (for seam measures);
    `strategy` must be resolved (its window known)."""
    L = strategy.window
    if isinstance(strategy, Autoregressive):
        return autoregressive.boundaries(num_frames, L, strategy.context_frames)
    if isinstance(strategy, Sliding):
        return sliding.boundaries(num_frames, L, strategy.stride)
    if isinstance(strategy, Keyframes):
        return keyframes.boundaries(num_frames, L)
    return [s for s in noise.plan(num_frames, L) if 0 < s < num_frames]


def to_uint8(x: Tensor) -> np.ndarray:
    """float [B, n, C, H, W] in [−1, 1] → uint8 [B, n, H, W, 3] on the host."""
    from vdengine.video import Video

    return Video.from_tensor(x).frames


@torch.inference_mode()
def generate_chunks(
    loop: GuidedSampler,
    strategy: Strategy,
    num_frames: int,
    batch_size: int,
    frame_shape: tuple[int, int, int],
    *,
    device: torch.device,
    dtype: torch.dtype,
    progress: bool = False,
    decode: Callable[[Tensor], np.ndarray] = to_uint8,
) -> Iterator[np.ndarray]:
    """Sample `batch_size` long videos of `num_frames` frames, chunk by chunk.

    Args:
        loop: the call's sampling loop (denoiser, sampler, conditioning, seeded generator).
        strategy: a strategy resolved against the denoiser (``strategy.resolve(spec)``).
        frame_shape: (C, H, W) of one latent frame.
        decode: latent chunk [B, n, C, H, W] → what is yielded (default: uint8 frames
            [B, n, H, W, 3] of a pixel-space model).

    Yields decoded chunks in frame order, n >= 1 frames each, Σn = num_frames. The initial noise
    comes from the loop's CPU generator, window after window.
    """
    source = NoiseSource(batch_size, frame_shape, loop.generator, strategy.noise_lambda,
                         device, dtype)
    run = _MODULES[type(strategy)].generate_latents
    with tqdm(total=num_frames, disable=not progress, unit="frame", leave=False,
              desc=strategy.label) as bar:
        for latents in run(loop, source, num_frames, strategy):
            out = decode(latents)
            n = latents.shape[1]
            del latents
            loop.stats.output_frames += n
            bar.update(n)
            yield out


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



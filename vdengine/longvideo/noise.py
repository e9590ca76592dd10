"""VideoFusion's decomposed noise (Luo et al., CVPR 2023), and "shared_noise" on its own.

The initial noise of frame i is  ε_i = √λ·b + √(1−λ)·r_i : one base noise b [C, H, W] per video,
shared by every frame of the whole long video, and an independent residual r_i per frame. Each
ε_i is still N(0, I) (λ + (1 − λ) = 1), but frames are correlated (corr(ε_i, ε_j) = λ), so windows
that never see each other start from related noise. λ = 0.5 was best in the paper's ablation; the
paper keeps b fixed and varies r_i for its 512-frame videos.

Caveat: VideoFusion trains its denoiser with this noise (a base generator estimates b, a residual
generator r_i). vdengine's models were trained with independent noise, so here the decomposition
is a sampling-time prior only; the paper's two-network estimate is not reproduced. With DDIM
(η = 0) only the initial noise is shared; samplers that add noise at each step (DDPM, η > 0) add
independent noise.

Every draw comes from the call's seeded CPU generator, window after window in frame order (the
base first), so a seed fixes the video on any device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from vdengine.longvideo.strategies import SharedNoise
from vdengine.sampling import GuidedSampler

__all__ = ["NoiseSource", "generate_latents", "plan"]


class NoiseSource:
    """Initial noise for a long video, drawn window by window.

    Args:
        batch_size: B videos (each gets its own base noise b).
        frame_shape: (C, H, W).
        generator: a seeded CPU torch.Generator (draws happen on the CPU, then move).
        noise_lambda: λ in [0, 1], or None for independent N(0, I) noise per frame.
        device, dtype: where the noise goes.
    """

    def __init__(
        self,
        batch_size: int,
        frame_shape: tuple[int, int, int],
        generator: torch.Generator,
        noise_lambda: float | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        if noise_lambda is not None and not 0.0 <= noise_lambda <= 1.0:
            raise ValueError(f"shared_noise_lambda (λ) must be in [0, 1], got {noise_lambda}")
        self.batch_size = batch_size
        self.frame_shape = tuple(frame_shape)
        self.generator = generator
        self.noise_lambda = noise_lambda
        self.device, self.dtype = device, dtype
        self.base: Tensor | None = None  # [B, 1, C, H, W] float32 on the CPU
        if noise_lambda is not None:
            self.base = torch.randn((batch_size, 1, *self.frame_shape), generator=generator)

    def draw(self, num_frames: int) -> Tensor:  # [B, num_frames, C, H, W]
        """Noise for the next `num_frames` frames: √λ·b + √(1−λ)·r_i, or r_i without λ."""
        r = torch.randn((self.batch_size, num_frames, *self.frame_shape),
                        generator=self.generator, dtype=torch.float32)
        if self.base is not None:
            lam = self.noise_lambda
            r.mul_(math.sqrt(1.0 - lam)).add_(self.base, alpha=math.sqrt(lam))
        return r.to(self.device, self.dtype)


def plan(num_frames: int, window: int) -> list[int]:
    """Start frame of each back-to-back window covering num_frames (the last may run past)."""
    return list(range(0, max(num_frames, 1), window))


def generate_latents(
    den: GuidedSampler,
    noise: NoiseSource,
    num_frames: int,
    opts: SharedNoise,
) -> Iterator[Tensor]:  # float [B, n, C, H, W] chunks
    """"shared_noise" alone: back-to-back windows of L frames, each sampled independently (no
    context) from the shared-base noise. The base noise is the only link between windows, so
    expect visible cuts at window boundaries; combine it with another strategy for continuity.
    Cost: steps × (1 or 2 with label guidance) frame-evaluations per output frame (the last
    window is sampled whole and trimmed). Memory: one window."""
    L = opts.window
    emitted = 0
    for _ in plan(num_frames, L):
        x = noise.draw(L)
        den.stats.windows += 1
        out = den.sample(x)
        n = min(L, num_frames - emitted)
        yield out[:, :n]
        emitted += n

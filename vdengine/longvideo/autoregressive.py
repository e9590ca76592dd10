"""Autoregressive extension with context frames (Video LDM's prediction model, Blattmann et al.
2023, §3.4 of "Align your Latents").

The first window of L frames is sampled without context. Every following window is L frames of
which the first S are the last S frames already generated, given to the model through the
context mask (c_S = (m_S ∘ z, m_S), as vdengine.balls.train trains it: the first 1, 2 or 4 frames of a
clip known); its L − S other frames are new. Context guidance (Video LDM, Eq. 5):

    f'(z; c_S) = f(z) + s·(f(z; c_S) − f(z)),   s >= 1,

with both terms in one forward ([no context; context] rows stacked on the batch axis, combined
by the fused sampler op). s = 1 is plain conditioning and skips the unconditioned rows. As in
training, the known frames also enter the noisy input x_t noised to the step's level
(`GuidedSampler._replacing`), rather than as the sampler's own estimate of them.

Cost per output frame: steps × L/(L − S) × (2 if s ≠ 1 else 1) frame-evaluations (label
guidance: ×2, or ×3 together with context guidance); 16-frame windows with S = 2 and s = 1.5 at
8 steps: 18.3. Windows are sequential (each needs the previous one), so a window's B videos
(and its guidance rows) are the batch. Memory: one window plus the S context frames.
The model was trained with S ∈ {0, 1, 2, 4} and L = 16; other values run but are off its
training distribution.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor

from vdengine.longvideo.noise import NoiseSource
from vdengine.longvideo.strategies import Autoregressive, Keyframes
from vdengine.sampling import GuidedSampler

__all__ = ["boundaries", "generate_latents", "plan"]


def plan(num_frames: int, window: int, context_frames: int) -> list[int]:
    """Start frame of each window: 0, then L − S apart (each window's first S frames are the
    previous window's last S). The last window may run past num_frames (it is trimmed)."""
    starts = [0]
    while starts[-1] + window < num_frames:
        starts.append(starts[-1] + window - context_frames)
    return starts


def boundaries(num_frames: int, window: int, context_frames: int) -> list[int]:
    """Frames f whose pair (f − 1, f) comes from two different windows: each window's first new
    frame after the first window."""
    return [s + context_frames for s in plan(num_frames, window, context_frames)[1:]
            if s + context_frames < num_frames]


def generate_latents(
    den: GuidedSampler,
    noise: NoiseSource,
    num_frames: int,
    opts: Autoregressive | Keyframes,
) -> Iterator[Tensor]:  # float [B, n, C, H, W] new frames, in order
    """Yield each window's new frames as soon as the window is sampled (the last chunk is trimmed
    to num_frames); only the last S frames are kept for the next window."""
    L, S = opts.window, opts.context_frames
    prev: Tensor | None = None  # [B, S, C, H, W] the last S frames, clean, in [−1, 1]
    emitted = 0
    for _ in plan(num_frames, L, S):
        x = noise.draw(L)
        den.stats.windows += 1
        if prev is None:
            out = den.sample(x)
            new = out
        else:
            context = x.new_zeros(x.shape)
            context[:, :S] = prev
            mask = x.new_zeros(x.shape[:2])
            mask[:, :S] = 1
            out = den.sample(x, context=context, mask=mask,
                             context_guidance=opts.context_guidance)
            new = out[:, S:]
        prev = out[:, L - S :].clamp(-1.0, 1.0).clone()
        n = min(new.shape[1], num_frames - emitted)
        yield new[:, :n]
        emitted += n
        del x, out, new

"""Temporal co-denoising of overlapping windows (Gen-L-Video, Wang et al. 2023; MultiDiffusion,
Bar-Tal et al. 2023, applied along time).

The whole video's latent x_t [B, N, C, H, W] is denoised jointly. At every step the windows
[k·stride, k·stride + L) (plus one window ending at the last frame when N − L is not a multiple
of the stride) are each denoised by the model and the per-window updates are averaged where the
windows overlap: MultiDiffusion's closed-form solution, x_{t−1}[f] = mean over windows w ∋ f of
Φ(x_t[w])[f].
With ``blend="triangular"`` (the default) the mean is weighted by each frame's position in its
window, w_i = min(i + 1, L − i), so a frame near a window's edge is mostly decided by the window
it is central in; ``blend="uniform"`` is MultiDiffusion's plain mean.

Implementation: the samplers' updates (DDIM, DPM-Solver++(2M) and DDPM are affine in the model
output for a fixed x_t and step; the guidance combine u + g·(c − u) is affine too) commute with
the (weighted) average, so averaging the *model outputs* per frame and applying one fused
update to the whole latent equals averaging the windows' updates. The window split therefore
lives in the model callable handed to the ordinary sampler: per step it stacks up to
`window_batch` windows (× the B videos × the guidance rows) on the batch axis of one forward,
then averages. With window_batch >= the number of windows a step is exactly one forward.

Cost per output frame: steps × (windows × L / N ≈ L/stride) × (2 with label guidance)
frame-evaluations (16-frame windows, stride 8, 8 steps: ≈ 16). Memory: unlike the other
strategies the whole latent is live until the last step (every window updates at every step), so
memory grows with N: about 6 latent-sized float buffers (x, the averaged output for each guidance
half, x0, the sampler's temporaries) = 6 × N × C·H·W × 4 bytes ≈ 75 MB for 1,024 frames of
3×32×32 at B = 1, plus the activations of one forward of window_batch windows (independent of
N). Frames are only final after the last step, so they are streamed out at the end, one window
at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from vdengine.longvideo.noise import NoiseSource
from vdengine.longvideo.strategies import BLENDS, Sliding
from vdengine.sampling import GuidedSampler, Rows, repeat_rows

__all__ = ["BLENDS", "blend_weights", "boundaries", "generate_latents", "plan"]


def plan(num_frames: int, window: int, stride: int) -> list[int]:
    """Window starts: 0, stride, 2·stride, ... and N − L when the last one falls short of N.
    num_frames <= window: one window (of L frames; the result is trimmed)."""
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


def blend_weights(window: int, blend: str) -> Tensor:
    """Per-frame weight of a window's output in the average: "uniform" (MultiDiffusion: 1) or
    "triangular" (min(i + 1, L − i): a window's edge frames count least, so the hand-over
    from one window to the next is gradual)."""
    if blend == "uniform":
        return torch.ones(window)
    if blend == "triangular":
        return torch.tensor([float(min(i + 1, window - i)) for i in range(window)])
    raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")


def boundaries(num_frames: int, window: int, stride: int) -> list[int]:
    """Frames f where the set of windows covering (f − 1, f) changes: window starts and ends."""
    total = max(num_frames, window)
    edges = set()
    for s in plan(total, window, stride):
        edges.update(e for e in (s, s + window) if 0 < e < num_frames)
    return sorted(edges)


def generate_latents(
    den: GuidedSampler,
    noise: NoiseSource,
    num_frames: int,
    opts: Sliding,
) -> Iterator[Tensor]:  # float [B, n, C, H, W], yielded after the last step
    L = opts.window
    total = max(num_frames, L)
    starts = plan(total, L, opts.stride)
    groups = [starts[i : i + opts.window_batch] for i in range(0, len(starts), opts.window_batch)]
    den.stats.windows += len(starts)
    x = noise.draw(total)  # [B, N, C, H, W]
    w = blend_weights(L, opts.blend if len(starts) > 1 else "uniform").to(x.device, x.dtype)
    cover = torch.zeros(total, dtype=x.dtype, device=x.device)
    for s in starts:
        cover[s : s + L] += w
    inv_cover = cover.reciprocal()[None, :, None, None, None]
    weight = None if opts.blend == "uniform" or len(starts) == 1 else w[None, :, None, None, None]

    def windowed(x_in: Tensor, t_in: Tensor, rows: Rows, context, mask) -> Tensor:
        # x_in [R, N, C, H, W] (R = B, or 2B under label guidance); out: the per-frame mean of
        # the windows' outputs.
        n = x_in.shape[0]
        out = torch.zeros_like(x_in)
        for group in groups:
            xs = torch.cat([x_in[:, s : s + L] for s in group])  # [len(group)·R, L, ...]
            o = den.forward(xs, t_in, repeat_rows(rows, len(group)), None, None)
            for i, s in enumerate(group):
                part = o[i * n : (i + 1) * n]
                out[:, s : s + L] += part if weight is None else part * weight
            del xs, o
        return out.mul_(inv_cover)

    x = den.sample(x, forward=windowed)
    for start in range(0, num_frames, L):
        yield x[:, start : min(start + L, num_frames)]

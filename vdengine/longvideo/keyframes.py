"""Keyframes, then interpolation (Video LDM's keyframe + interpolation models, Blattmann et al.
2023, §3.4), with one model.

Video LDM generates T keyframes at a low frame rate, then an interpolation model fills 3 frames
between each pair (T → 4T) by masking the middle frames: the two ends are known, c = (m ∘ z, m).
vdengine's models are trained on consecutive frames with, among other masks, "first and last
frame of the window known" (vdengine.balls.train's "keyframes" mask) and never on strided clips, so:

1. Keyframe pass: keyframes K_j = frame j·(L − 1) are taken from an autoregressive pass
   (vdengine.longvideo.autoregressive: context S, guidance s). A consecutive-frame model cannot
   produce frames L − 1 apart without producing the frames between them, so this pass costs as
   much as strategy "autoregressive"; only the keyframes (and its S context frames) are kept.
2. Fill pass: every gap [K_j, K_{j+1}] is one window of L frames with the first and last known and
   the L − 2 middle frames masked: exactly the interpolation mask the model was trained with.
   Gaps are independent, so up to `window_batch` gaps (× B videos × guidance rows) share each
   forward. The keyframes are output as they are; the middle frames come from the fill.

What it achieves: T → (L − 1)·T + 1 (T + 1 keyframes 15 apart give 15·T + 1 frames with the
16-frame model; not Video LDM's 4×, which needs a model trained on 4×-strided keyframes). Every
frame up to the last keyframe is sampled knowing a real frame on both sides, so the fill windows
meet exactly at the keyframes; but the velocity across a keyframe is only implied by the two
gaps' end points. The frames after the last keyframe (num_frames − 1 not a multiple of L − 1:
fewer than L − 1 of them) come straight from the keyframe pass rather than from an extra gap.
Cost per output frame: the autoregressive pass (steps × L/(L − S) × guidance rows) plus the fill
(steps × L/(L − 1) × guidance rows): ≈ 2.1× "autoregressive" (16-frame windows, S = 2, s = 1.5,
8 steps: 18.3 + 17.1 = 35.4). Memory: one autoregressive window, or one fill forward of
window_batch gaps, plus window_batch + 1 keyframes; flat in the video length.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from vdengine.longvideo import autoregressive
from vdengine.longvideo.noise import NoiseSource
from vdengine.longvideo.strategies import Keyframes
from vdengine.sampling import GuidedSampler

__all__ = ["boundaries", "generate_latents", "keyframe_positions"]


def keyframe_positions(num_frames: int, window: int) -> list[int]:
    """Keyframes 0, L − 1, 2(L − 1), ... <= num_frames − 1 (num_frames > window)."""
    return list(range(0, num_frames, window - 1))


def boundaries(num_frames: int, window: int) -> list[int]:
    """Frames f whose pair (f − 1, f) joins two windows: f = K (a fill's last middle frame, then
    the keyframe K) and f = K + 1 (the keyframe, then the next fill's first middle frame)."""
    if num_frames <= window:
        return []
    keys = keyframe_positions(num_frames, window)
    edges = {k for k in keys[1:]} | {k + 1 for k in keys[1:-1]}
    return sorted(f for f in edges if f < num_frames)


def _fill(
    den: GuidedSampler,
    noise: NoiseSource,
    keys: list[Tensor],  # g + 1 keyframes, each [B, C, H, W]
    opts: Keyframes,
) -> list[Tensor]:  # g chunks [B, L − 1, C, H, W]: K_j and the L − 2 frames after it
    L = opts.window
    g = len(keys) - 1
    b = keys[0].shape[0]
    x = torch.cat([noise.draw(L) for _ in range(g)])  # [g·B, L, C, H, W], gap-major
    context = x.new_zeros(x.shape)
    context[:, 0] = torch.cat(keys[:-1])
    context[:, L - 1] = torch.cat(keys[1:])
    mask = x.new_zeros(x.shape[:2])
    mask[:, 0] = mask[:, L - 1] = 1
    den.stats.windows += g
    out = den.sample(x, context=context, mask=mask,
                     context_guidance=opts.context_guidance)
    chunks = []
    for j in range(g):
        mid = out[j * b : (j + 1) * b, 1 : L - 1]
        chunks.append(torch.cat([keys[j][:, None], mid], dim=1))
    return chunks


def generate_latents(
    den: GuidedSampler,
    noise: NoiseSource,
    num_frames: int,
    opts: Keyframes,
) -> Iterator[Tensor]:  # float [B, n, C, H, W], in order
    L, k = opts.window, opts.window - 1
    if num_frames <= L:  # one window: no keyframes needed
        yield from autoregressive.generate_latents(den, noise, num_frames, opts)
        return
    last = keyframe_positions(num_frames, L)[-1]
    pending: list[Tensor] = []  # keyframes whose following gap is not filled yet
    tail: list[Tensor] = []  # frames after the last keyframe (fewer than L − 1)
    seen = 0  # frames of the keyframe pass consumed

    for chunk in autoregressive.generate_latents(den, noise, num_frames, opts):
        for i in range(chunk.shape[1]):
            f = seen + i
            if f % k == 0:
                pending.append(chunk[:, i].clamp(-1.0, 1.0))  # clean frames, as trained
            if f > last:
                tail.append(chunk[:, i].clone())
        seen += chunk.shape[1]
        del chunk
        while len(pending) > opts.window_batch:
            yield from _fill(den, noise, pending[: opts.window_batch + 1], opts)
            pending = pending[opts.window_batch :]
    while len(pending) > 1:
        group = pending[: opts.window_batch + 1]
        yield from _fill(den, noise, group, opts)
        pending = pending[len(group) - 1 :]
    # The last keyframe, then the frames after it straight from the keyframe pass.
    yield torch.stack([pending[-1], *tail], dim=1)

"""The sampling loop every generate() call runs: a denoiser driven by a sampler, with the guidance
rows stacked on the batch axis.

`GuidedSampler.sample` is the one place that builds the rows of a forward: the B videos, the
classifier-free guidance rows ([uncond; cond]), Video LDM's context-guidance rows ([no context;
context]), or both (three row groups in one forward). Short videos call it once; the long-video
strategies (`vdengine.longvideo`) call it per window and may stack several windows. The sampler
(`vdengine.samplers`) and its fused update op do the rest; nothing here loops over videos, and
nothing reads a device tensor back to the host inside the step loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from vdengine.denoiser import Denoiser
from vdengine.samplers import get_sampler
from vdengine.schedules import NoiseSchedule

Rows = dict[str, Tensor]
# forward(x [R, F, C, H, W], t [1], conditioning rows, context [R, F, ...] | None,
#         mask [R, F] | None) -> [R, F, C, H, W]
Forward = Callable[[Tensor, Tensor, Rows, "Tensor | None", "Tensor | None"], Tensor]


@dataclass
class SamplingStats:
    """Counters filled while videos are sampled (for benchmarks and tests).

    frame_evals: Σ over denoiser forwards of rows × frames (the work the denoiser did).
    forwards: denoiser forwards. windows: denoising windows sampled. output_frames: frames per
    video delivered. rows: the batch size of each forward (one entry per forward).
    """

    frame_evals: int = 0
    forwards: int = 0
    windows: int = 0
    output_frames: int = 0
    rows: list[int] = field(default_factory=list)


def cat_rows(*parts: Mapping[str, Tensor]) -> Rows:
    """Concatenate conditioning dicts on the batch axis (the same keys in each)."""
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def repeat_rows(t: Any, times: int) -> Any:
    """[R, ...] → [times·R, ...] window-major (window w holds rows w·R .. w·R + R − 1); a dict of
    tensors is repeated value by value, None stays None."""
    if t is None or times == 1:
        return t
    if isinstance(t, Mapping):
        return {k: repeat_rows(v, times) for k, v in t.items()}
    return t.repeat(times, *([1] * (t.dim() - 1)))


class GuidedSampler:
    """A denoiser, its schedule and a sampler, with the conditioning of one generate() call.

    Args:
        model: the denoiser (vdengine.Denoiser protocol).
        schedule: its noise schedule.
        steps: denoiser evaluations per sample.
        sampler: a name in vdengine.samplers.SAMPLERS.
        sampler_options: extra keywords of the sampler (eta, spacing, schedule options).
        cond: the conditioning rows of the B videos ({} for an unconditional model).
        uncond: their unconditional values, for classifier-free guidance, or None.
        guidance_scale: the classifier-free guidance scale (a float or a per-frame tensor), or
            None. Needs `uncond`.
        generator: the seeded CPU generator (per-step noise of stochastic samplers).
        stats: counters to fill.
    """

    #: Replace the model's input at known frames by the noised known frames (see _replacing).
    replace_known: bool = True

    def __init__(self, model: Denoiser, schedule: NoiseSchedule, *, steps: int, sampler: str,
                 sampler_options: Mapping[str, Any], cond: Rows, uncond: Rows | None,
                 guidance_scale: float | Tensor | None, generator: torch.Generator,
                 stats: SamplingStats | None = None) -> None:
        if guidance_scale is not None and uncond is None:
            raise ValueError("guidance_scale needs the unconditional conditioning (uncond)")
        self.model = model
        self.schedule = schedule
        self.prediction_type = model.spec.prediction_type
        self.steps = steps
        self.sample_fn = get_sampler(sampler)
        self.sampler_options = dict(sampler_options)
        self.cond, self.uncond = dict(cond), (None if uncond is None else dict(uncond))
        self.guidance_scale = guidance_scale if uncond is not None else None
        self.generator = generator
        self.stats = SamplingStats() if stats is None else stats
        self._alpha_bar: Tensor | None = None

    def forward(self, x: Tensor, t: Tensor, rows: Rows, context: Tensor | None,
                mask: Tensor | None) -> Tensor:
        """One model forward over all rows; t: the step's timestep (every row shares it)."""
        self.stats.forwards += 1
        self.stats.frame_evals += x.shape[0] * x.shape[1]
        self.stats.rows.append(x.shape[0])
        if context is None:
            return self.model(x, t[:1], **rows)
        return self.model(x, t[:1], **rows, context=context, context_mask=mask)

    def sample(
        self,
        x: Tensor,  # [R, F, C, H, W] initial noise (R = windows × videos, window-major)
        context: Tensor | None = None,  # [R, F, C, H, W] clean known frames
        mask: Tensor | None = None,  # [R, F], 1 = known
        context_guidance: float = 1.0,
        forward: Forward | None = None,
    ) -> Tensor:  # [R, F, C, H, W] the sample at t = 0
        """Sample x with the sampler; every step is one `forward` over the rows:

        - no guidance: R rows;
        - classifier-free guidance g only: [uncond; cond] (the fused op combines u + g·(c − u));
        - context guidance s ≠ 1 only: [no context; context] (u + s·(c − u), Video LDM);
        - both: 3R rows [no context, uncond; context, uncond; context, cond] combined here as
          f(∅) + s·(f(c) − f(∅)) + g·(f(c, y) − f(c)), then a plain fused update.

        R may be a multiple of the B videos (windows stacked): the conditioning rows repeat.
        """
        fwd = forward or self.forward
        videos = self._batch()
        reps = x.shape[0] // videos if videos else 1
        cond = repeat_rows(self.cond, reps)
        uncond = repeat_rows(self.uncond, reps)
        g = self.guidance_scale
        s = context_guidance if context is not None else 1.0
        no_mask = None if mask is None else torch.zeros_like(mask)

        def cat(*parts):
            return None if parts[0] is None else torch.cat(parts)

        if s == 1.0 and g is None:
            def model_fn(x_in, t_in):
                return fwd(x_in, t_in, cond, context, mask)
            scale = None
        elif s == 1.0:  # classifier-free guidance
            rows = (cat_rows(uncond, cond), cat(context, context), cat(mask, mask))

            def model_fn(x_in, t_in):
                return fwd(x_in, t_in, *rows)
            scale = g
        elif g is None:  # context guidance
            rows = (cat_rows(cond, cond), cat(context, context), cat(no_mask, mask))

            def model_fn(x_in, t_in):
                return fwd(x_in, t_in, *rows)
            scale = s
        else:  # both, in one forward of 3R rows
            rows = (cat_rows(uncond, uncond, cond), cat(context, context, context),
                    cat(no_mask, mask, mask))

            def model_fn(x_in, t_in):
                out = fwd(torch.cat([x_in, x_in, x_in]), t_in, *rows)
                u, c, cy = out.chunk(3)
                return (u + s * (c - u) + g * (cy - c)).contiguous()
            scale = None
        if context is not None and self.replace_known:
            model_fn = self._replacing(model_fn, x, context, mask)
        return self.sample_fn(
            model_fn, x, self.schedule, self.steps, prediction_type=self.prediction_type,
            guidance_scale=scale, generator=self.generator, disable=True,
            **self.sampler_options)

    def _batch(self) -> int:
        """B, the videos of the call (rows of the conditioning), 0 when unconditioned."""
        return next((v.shape[0] for v in self.cond.values()), 0)

    def _replacing(self, model_fn, x: Tensor, context: Tensor, mask: Tensor):
        """Feed the model x_t = √ᾱ_t·c + √(1−ᾱ_t)·ε at the known frames, as in training (there
        every frame of x_t is the noised clip, the known ones included); ε = the window's
        initial noise, so this is the DDIM path of a denoiser that reproduces c exactly. The
        sampler's own state at those frames is never fed back (their output is discarded)."""
        if self._alpha_bar is None or self._alpha_bar.device != x.device:
            self._alpha_bar = self.schedule.alphas_cumprod.to(x.device, torch.float32)
        table = self._alpha_bar
        eps = x.clone()
        known = mask[:, :, None, None, None].to(x.dtype)
        rows = x.shape[0]

        def replaced(x_in: Tensor, t_in: Tensor) -> Tensor:
            ab = table[t_in[:1].long()].to(x.dtype)  # [1], gathered on the device: no sync
            noised = ab.sqrt() * context + (1.0 - ab).sqrt() * eps
            k = known
            if x_in.shape[0] != rows:  # guidance halves: [x; x]
                times = x_in.shape[0] // rows
                noised, k = repeat_rows(noised, times), repeat_rows(k, times)
            return model_fn(torch.lerp(x_in, noised, k), t_in)

        return replaced


__all__ = ["Forward", "GuidedSampler", "Rows", "SamplingStats", "cat_rows", "repeat_rows"]

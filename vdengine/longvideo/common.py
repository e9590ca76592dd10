"""What every long-video strategy shares: the options, the batched denoiser and its counters.

A strategy is a generator of finished latent chunks, float ``[B, n, C, H, W]`` in [−1, 1], in
frame order; `vdengine.longvideo.generate_chunks` turns them into uint8 frames for the writer.
Each strategy holds at most a bounded number of windows (sliding: see its module), so memory does
not grow with the video's length.

Denoiser calls go through `Denoiser`: one model forward per sampler step, with every row that
step needs stacked on the batch axis — the B videos, the guidance rows ([uncond; cond] for
classifier-free or context guidance, three rows when both are on) and, for sliding and keyframe
filling, several windows. The samplers (`vdengine.samplers`) and their fused update ops do the
rest; nothing here loops over videos.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from vdengine.samplers import get_sampler

STRATEGIES = ("autoregressive", "shared_noise", "sliding", "keyframes")
#: Strategies that decide the windows; "shared_noise" decides the initial noise and combines with
#: any of them ("shared_noise" alone: back-to-back independent windows).
WINDOW_STRATEGIES = ("autoregressive", "sliding", "keyframes")
#: Strategies that condition on known frames (need a model trained with context masks).
CONTEXT_STRATEGIES = ("autoregressive", "keyframes")

DEFAULT_CONTEXT_FRAMES = 2
DEFAULT_CONTEXT_GUIDANCE = 1.5
DEFAULT_NOISE_LAMBDA = 0.5
DEFAULT_BLEND = "triangular"
BLENDS = ("triangular", "uniform")
#: Windows (sliding) or gaps (keyframes) per forward. 2 keeps the largest forward of a long video
#: the same as at two windows (flat peak memory); raise it for throughput on a GPU.
DEFAULT_WINDOW_BATCH = 2
#: The keyword options of generate(long_video=...) that LongVideoOptions.resolve takes.
OPTION_NAMES = ("context_frames", "context_guidance", "window", "stride", "shared_noise_lambda",
                "window_batch", "blend")

__all__ = [
    "CONTEXT_STRATEGIES",
    "STRATEGIES",
    "WINDOW_STRATEGIES",
    "Denoiser",
    "LongVideoOptions",
    "LongVideoStats",
    "parse_strategy",
]


def parse_strategy(long_video: Any) -> tuple[str, bool]:
    """'autoregressive', 'sliding+shared_noise', ('keyframes', 'shared_noise'), ... →
    (window strategy, shared noise on). "shared_noise" alone is the window strategy
    "shared_noise" (independent back-to-back windows) with shared noise on."""
    expected = (f"expected one of {', '.join(repr(s) for s in STRATEGIES)}, or shared_noise "
                "combined with another as 'autoregressive+shared_noise'")
    if isinstance(long_video, str):
        names = [n.strip() for n in long_video.replace(",", "+").split("+")]
    elif isinstance(long_video, Sequence) and all(isinstance(n, str) for n in long_video):
        names = [n.strip() for n in long_video]
    else:
        raise TypeError(f"long_video must be a str, got {type(long_video).__name__}; {expected}")
    if not names or any(n not in STRATEGIES for n in names):
        raise ValueError(f"long_video: unknown strategy {long_video!r}; {expected}")
    windows = [n for n in dict.fromkeys(names) if n in WINDOW_STRATEGIES]
    if len(windows) > 1:
        raise ValueError(f"long_video: {' and '.join(windows)} cannot be combined (one window "
                         f"strategy at a time; only shared_noise combines), got {long_video!r}")
    shared = "shared_noise" in names
    return (windows[0] if windows else "shared_noise"), shared


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


@dataclass(frozen=True)
class LongVideoOptions:
    """A long-video strategy and its settings, resolved against one model.

    Attributes:
        strategy: the window strategy: "autoregressive", "sliding", "keyframes", or
            "shared_noise" (independent back-to-back windows; its only coupling is the noise).
        window: L, frames per denoiser window (<= the model's window).
        context_frames: S, known frames each autoregressive window is conditioned on (1 <= S < L).
        context_guidance: s >= 1 in f(z) + s·(f(z; c_S) − f(z)); 1 = plain conditioning (the
            unconditioned rows are then skipped).
        stride: sliding only: frames between window starts (1 <= stride <= L).
        noise_lambda: λ of VideoFusion's shared base noise √λ·b + √(1−λ)·r_i, or None for
            independent noise per frame.
        window_batch: most windows stacked in one forward (sliding windows, keyframe gaps).
        blend: sliding only: "triangular" (default) or "uniform" weights of the overlap average.
    """

    strategy: str
    window: int
    context_frames: int = DEFAULT_CONTEXT_FRAMES
    context_guidance: float = DEFAULT_CONTEXT_GUIDANCE
    stride: int | None = None
    noise_lambda: float | None = None
    window_batch: int = DEFAULT_WINDOW_BATCH
    blend: str = DEFAULT_BLEND

    @property
    def name(self) -> str:
        """The strategy as generate(long_video=...) spells it."""
        if self.strategy == "shared_noise" or self.noise_lambda is None:
            return self.strategy
        return f"{self.strategy}+shared_noise"

    @classmethod
    def resolve(
        cls,
        long_video: Any,
        model_config: Any,
        *,
        context_frames: int | None = None,
        context_guidance: float | None = None,
        window: int | None = None,
        stride: int | None = None,
        shared_noise_lambda: float | None = None,
        window_batch: int | None = None,
        blend: str | None = None,
    ) -> LongVideoOptions:
        """Validate a generate(long_video=..., ...) request for a model; ValueError/TypeError
        naming the argument. None means the strategy's default; an option the strategy does not
        use is an error (it would silently do nothing)."""
        if isinstance(long_video, LongVideoOptions):
            strategy, shared = long_video.strategy, long_video.noise_lambda is not None
            base = long_video
            window = base.window if window is None else window
            stride = base.stride if stride is None else stride
            context_frames = base.context_frames if context_frames is None else context_frames
            if context_guidance is None:
                context_guidance = base.context_guidance
            if shared_noise_lambda is None:
                shared_noise_lambda = base.noise_lambda
            window_batch = base.window_batch if window_batch is None else window_batch
            blend = base.blend if blend is None else blend
        else:
            strategy, shared = parse_strategy(long_video)
        name = f"{strategy}+shared_noise" if shared and strategy != "shared_noise" else strategy

        def unused(arg: str, used_by: str) -> ValueError:
            return ValueError(f"{arg} applies only to long_video={used_by}, not {name!r}")

        if strategy in CONTEXT_STRATEGIES and not model_config.context:
            raise ValueError(
                f"long_video={strategy!r} conditions on known frames, but model "
                f"{model_config.name!r} has no context conditioning (config.context is False); "
                "use 'sliding' or 'shared_noise'")
        model_window = model_config.window
        L = model_window if window is None else _int("window", window)
        need = 3 if strategy == "keyframes" else 2 if strategy == "autoregressive" else 1
        if not need <= L <= model_window:
            raise ValueError(f"window must be in [{need}, {model_window}] (the model's window) "
                             f"for long_video={name!r}, got {L}")

        if strategy in CONTEXT_STRATEGIES:
            S = DEFAULT_CONTEXT_FRAMES if context_frames is None else _int(
                "context_frames", context_frames)
            S = min(S, L - 1) if context_frames is None else S
            if S < 1:
                raise ValueError(f"context_frames must be >= 1, got {S}")
            if S >= L:
                raise ValueError(f"context_frames must be smaller than the window ({L} frames): "
                                 f"each window needs a new frame to generate, got {S}")
            s = DEFAULT_CONTEXT_GUIDANCE if context_guidance is None else _real(
                "context_guidance", context_guidance)
            if s < 1:
                raise ValueError(f"context_guidance must be >= 1 (1 = plain conditioning), got {s}")
        else:
            if context_frames is not None and not isinstance(long_video, LongVideoOptions):
                raise unused("context_frames", "'autoregressive' or 'keyframes'")
            if context_guidance is not None and not isinstance(long_video, LongVideoOptions):
                raise unused("context_guidance", "'autoregressive' or 'keyframes'")
            S, s = DEFAULT_CONTEXT_FRAMES, DEFAULT_CONTEXT_GUIDANCE

        if strategy == "sliding":
            st = max(1, L // 2) if stride is None else _int("stride", stride)
            if not 1 <= st <= L:
                raise ValueError(f"stride must be in [1, window={L}] (windows must touch or "
                                 f"overlap), got {st}")
            bl = DEFAULT_BLEND if blend is None else blend
            if bl not in BLENDS:
                raise ValueError(f"blend must be one of {BLENDS}, got {bl!r}")
        else:
            if stride is not None and not isinstance(long_video, LongVideoOptions):
                raise unused("stride", "'sliding'")
            if blend is not None and not isinstance(long_video, LongVideoOptions):
                raise unused("blend", "'sliding'")
            st, bl = None, DEFAULT_BLEND

        lam = None
        if shared:
            lam = DEFAULT_NOISE_LAMBDA if shared_noise_lambda is None else _real(
                "shared_noise_lambda", shared_noise_lambda)
            if not 0.0 <= lam <= 1.0:
                raise ValueError(f"shared_noise_lambda (λ) must be in [0, 1], got {lam}")
        elif shared_noise_lambda is not None:
            raise unused("shared_noise_lambda", "'shared_noise' or '<strategy>+shared_noise'")

        wb = DEFAULT_WINDOW_BATCH if window_batch is None else _int("window_batch", window_batch)
        if wb < 1:
            raise ValueError(f"window_batch must be >= 1, got {wb}")
        return cls(strategy=strategy, window=L, context_frames=S, context_guidance=s,
                   stride=st, noise_lambda=lam, window_batch=wb, blend=bl)


@dataclass
class LongVideoStats:
    """Counters filled while a long video is generated (for benchmarks and tests).

    frame_evals: Σ over denoiser forwards of rows × frames (the work the denoiser did).
    forwards: denoiser forwards. windows: denoising windows sampled (sliding: windows per step ×
    1, counted once). output_frames: frames per video delivered. rows: the batch size of each
    forward (a list, one entry per forward).
    """

    frame_evals: int = 0
    forwards: int = 0
    windows: int = 0
    output_frames: int = 0
    rows: list[int] = field(default_factory=list)


# forward(x [R, F, C, H, W], t [1], label [R] | None, context [R, F, ...] | None,
#         mask [R, F] | None) -> [R, F, C, H, W]
Forward = Callable[[Tensor, Tensor, "Tensor | None", "Tensor | None", "Tensor | None"], Tensor]


class Denoiser:
    """The pipeline's model driven by its sampler, with the guidance rows stacked.

    Args:
        pipe: a `vdengine.api.Pipeline` (model, schedule, device, dtype).
        steps, sampler, eta, spacing: as Pipeline.generate.
        guidance_scale: classifier-free (label) guidance scale g, or None.
        generator: the seeded CPU generator (the samplers' per-step noise for η > 0 / DDPM).
        stats: counters to fill.
    """

    def __init__(
        self,
        pipe: Any,
        *,
        steps: int,
        sampler: str,
        eta: float,
        spacing: str,
        guidance_scale: float | None,
        generator: torch.Generator,
        stats: LongVideoStats,
    ) -> None:
        self.pipe = pipe
        self.model = pipe.model
        self.config = pipe.config
        self.steps = steps
        self.sample_fn = get_sampler(sampler)
        self.sampler_kwargs = {"eta": eta} if sampler == "ddim" else {}
        self.spacing = spacing
        self.guidance_scale = guidance_scale
        self.generator = generator
        self.stats = stats
        self.null = self.config.num_classes if self.config.num_classes > 0 else None
        self._alpha_bar: Tensor | None = None

    #: Replace the model's input at known frames by the noised known frames (see _replacing).
    replace_known: bool = True

    def forward(self, x: Tensor, t: Tensor, label: Tensor | None, context: Tensor | None,
                mask: Tensor | None) -> Tensor:
        """One model forward over all rows; t: the step's timestep (every row shares it)."""
        self.stats.forwards += 1
        self.stats.frame_evals += x.shape[0] * x.shape[1]
        self.stats.rows.append(x.shape[0])
        if context is None:
            return self.model(x, t[:1], label=label)
        return self.model(x, t[:1], label=label, context=context, context_mask=mask)

    def sample(
        self,
        x: Tensor,  # [R, F, C, H, W] initial noise (R = videos × windows)
        labels: Tensor | None,  # [R] long, or None
        context: Tensor | None = None,  # [R, F, C, H, W] clean known frames
        mask: Tensor | None = None,  # [R, F], 1 = known
        context_guidance: float = 1.0,
        forward: Forward | None = None,
    ) -> Tensor:  # [R, F, C, H, W] the sample at t = 0
        """Sample x with the pipeline's sampler; every step is one `forward` over the rows:

        - no guidance: R rows;
        - label guidance g only: [null label; label] (the fused op combines u + g·(c − u));
        - context guidance s ≠ 1 only: [no context; context] (u + s·(c − u), Video LDM);
        - both: 3R rows [no context, null; context, null; context, label] combined here as
          f(∅) + s·(f(c) − f(∅)) + g·(f(c, y) − f(c)), then a plain fused update.
        """
        fwd = forward or self.forward
        g = self.guidance_scale if labels is not None else None
        s = context_guidance if context is not None else 1.0
        null = None if labels is None else torch.full_like(labels, self.null)
        no_mask = None if mask is None else torch.zeros_like(mask)

        def cat(*parts):
            return None if parts[0] is None else torch.cat(parts)

        if s == 1.0 and g is None:
            def model_fn(x_in, t_in):
                return fwd(x_in, t_in, labels, context, mask)
            scale = None
        elif s == 1.0:  # label guidance
            rows = (cat(null, labels), cat(context, context), cat(mask, mask))

            def model_fn(x_in, t_in):
                return fwd(x_in, t_in, *rows)
            scale = g
        elif g is None:  # context guidance
            rows = (cat(labels, labels), cat(context, context), cat(no_mask, mask))

            def model_fn(x_in, t_in):
                return fwd(x_in, t_in, *rows)
            scale = s
        else:  # both, in one forward of 3R rows
            rows = (cat(null, null, labels), cat(context, context, context),
                    cat(no_mask, mask, mask))

            def model_fn(x_in, t_in):
                out = fwd(torch.cat([x_in, x_in, x_in]), t_in, *rows)
                u, c, cy = out.chunk(3)
                return (u + s * (c - u) + g * (cy - c)).contiguous()
            scale = None
        if context is not None and self.replace_known:
            model_fn = self._replacing(model_fn, x, context, mask)
        return self.sample_fn(
            model_fn, x, self.pipe.schedule, self.steps, spacing=self.spacing,
            prediction_type=self.config.prediction_type, guidance_scale=scale,
            generator=self.generator, disable=True, **self.sampler_kwargs)

    def _replacing(self, model_fn, x: Tensor, context: Tensor, mask: Tensor):
        """Feed the model x_t = √ᾱ_t·c + √(1−ᾱ_t)·ε at the known frames, as in training (there
        every frame of x_t is the noised clip, the known ones included); ε = the window's
        initial noise, so this is the DDIM path of a denoiser that reproduces c exactly. The
        sampler's own state at those frames is never fed back (their output is discarded)."""
        if self._alpha_bar is None or self._alpha_bar.device != x.device:
            self._alpha_bar = self.pipe.schedule.alphas_cumprod.to(x.device, torch.float32)
        table = self._alpha_bar
        eps = x.clone()
        known = mask[:, :, None, None, None].to(x.dtype)
        rows = x.shape[0]

        def replaced(x_in: Tensor, t_in: Tensor) -> Tensor:
            ab = table[t_in[:1].long()].to(x.dtype)  # [1], gathered on the device: no sync
            noised = ab.sqrt() * context + (1.0 - ab).sqrt() * eps
            k = known
            if x_in.shape[0] != rows:  # guidance halves: [x; x]
                reps = x_in.shape[0] // rows
                noised, k = repeat_rows(noised, reps), repeat_rows(k, reps)
            return model_fn(torch.lerp(x_in, noised, k), t_in)

        return replaced


def repeat_rows(t: Tensor | None, times: int) -> Tensor | None:
    """[R, ...] → [times·R, ...] window-major (window w holds rows w·R .. w·R + R − 1)."""
    if t is None or times == 1:
        return t
    return t.repeat(times, *([1] * (t.dim() - 1)))


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]

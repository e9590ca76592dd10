"""The Denoiser protocol: what any model must offer the engine.

A denoiser is a callable ``denoiser(x, t, **conditioning) -> prediction`` with a ``spec`` the
engine reads. vdengine's own ``VideoUNet``, the diffusers adapters (``vdengine.adapters``), the
exported-graph backends (``vdengine.runtime``) and any user-written ``nn.Module`` that follows
this protocol go through the same ``generate()``: samplers, guidance, batching, long videos.

The engine's layout is ``[B, F, C, H, W]`` (frames before channels, rows of the batch axis first).
A denoiser whose native layout is ``[B, C, F, H, W]`` says so in ``spec.layout``: it still
receives and returns ``[B, F, C, H, W]`` tensors, and the layout only tells the API how to read
user-given ``latents=`` (an adapter permutes at its own boundary, as a view).

Classifier-free guidance stacks the unconditional and the conditional rows of every conditioning
input on the batch axis, ``[uncond; cond]``, and runs one forward (``stack_guidance``). For each
name in ``spec.conditioning`` the unconditional value comes from the user (``negative_<name>``)
or, when there is one, from ``spec.null_conditioning`` (e.g. VideoUNet's null class label).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from vdengine.schedules import PREDICTION_TYPES, NoiseSchedule

LAYOUTS = ("BFCHW", "BCFHW")


@dataclass(frozen=True)
class DenoiserSpec:
    """What the engine needs to know to sample from a denoiser.

    Attributes:
        name: a label for messages ("balls32", "UNet3DConditionModel", ...).
        channels: C, channels of the noisy input x (and of the prediction).
        sample_size: (H, W) of x, or None when any size the model accepts works (then
            ``generate(height=, width=)`` must give it).
        window: frames per forward the model was trained on and always samples (a shorter
            video is the prefix of a full window), or None for any number.
        max_frames: the most frames one forward can take when ``window`` is None (e.g.
            AnimateDiff's 32-entry position table), or None for no limit.
        prediction_type: what the model predicts: "epsilon", "v_prediction" or "sample".
        schedule: the discrete noise schedule it was trained with.
        layout: "BFCHW" or "BCFHW": the model's native latent layout (see the module docstring).
        conditioning: keyword inputs of the forward that carry conditioning, e.g. ("label",).
        null_conditioning: the unconditional value of a conditioning input, where the model has
            one (an int fills a long tensor; a tensor is repeated over the batch).
        context: True when the forward takes ``context=`` [B, F, C, H, W] clean known frames and
            ``context_mask=`` [B, F] (Video LDM context conditioning; autoregressive and keyframe
            long videos need it).
        num_classes: class labels 0..num_classes-1 are valid for ``label`` (0 = no labels).
    """

    name: str
    channels: int
    sample_size: tuple[int, int] | None
    window: int | None
    prediction_type: str
    schedule: NoiseSchedule
    layout: str = "BFCHW"
    max_frames: int | None = None
    conditioning: tuple[str, ...] = ()
    null_conditioning: Mapping[str, Any] = field(default_factory=dict)
    context: bool = False
    num_classes: int = 0

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, "
                             f"got {self.prediction_type!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if not isinstance(self.schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a vdengine NoiseSchedule, "
                            f"got {type(self.schedule).__name__}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1 or None, got {self.window}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {self.max_frames}")

    @property
    def frame_limit(self) -> int | None:
        """The most frames one forward takes (window, else max_frames), None: no limit."""
        return self.window if self.window is not None else self.max_frames


@runtime_checkable
class Denoiser(Protocol):
    """A video denoiser the engine can sample from.

    ``__call__(x [B, F, C, H, W] in x_t, t [B] or [1] float timesteps, **conditioning)`` returns
    the prediction [B, F, C, H, W] of type ``spec.prediction_type``. Every row of one call shares
    the step's timestep in the engine's loops, so ``t`` may arrive as a single value.
    """

    spec: DenoiserSpec

    def __call__(self, x: Tensor, t: Tensor, **conditioning: Any) -> Tensor: ...


def conditioning_rows(denoiser: Denoiser, batch_size: int, guided: bool,
                      user_kwargs: Mapping[str, Any], device: torch.device
                      ) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """The forward's conditioning keywords for ``batch_size`` videos: ``(cond, uncond)``, dicts
    of batch-first tensors (uncond None without guidance). `stack_guidance` (or the sampling
    loop, vdengine.sampling) stacks them [uncond; cond] for one forward.

    A denoiser may define ``prepare_conditioning(batch_size, guided, **user_kwargs)`` returning
    ``(cond, uncond)`` — the diffusers adapters do, to map ``prompt_embeds=`` and friends onto
    their forward. Otherwise each name in ``spec.conditioning`` is read from ``user_kwargs``
    (ints, int sequences or tensors), and with guidance its unconditional value from
    ``negative_<name>`` or ``spec.null_conditioning``. An unknown keyword is a ValueError
    naming it.
    """
    spec = denoiser.spec
    hook = getattr(denoiser, "prepare_conditioning", None)
    if hook is not None:
        cond, uncond = hook(batch_size, guided, **user_kwargs)
        return dict(cond), (dict(uncond) if guided else None)
    accepted = set(spec.conditioning) | {f"negative_{n}" for n in spec.conditioning}
    unknown = sorted(set(user_kwargs) - accepted)
    if unknown:
        names = ", ".join(sorted(accepted)) or "none"
        raise ValueError(f"unexpected argument(s) {', '.join(unknown)} for model "
                         f"{spec.name!r} (its conditioning inputs: {names})")
    cond, uncond = {}, {}
    for name in spec.conditioning:
        value = user_kwargs.get(name)
        if value is None:
            if guided:
                raise ValueError(f"guidance_scale needs {name}= to guide towards")
            continue
        cond[name] = _checked(spec, name, value, batch_size, device)
        if guided:
            negative = user_kwargs.get(f"negative_{name}", spec.null_conditioning.get(name))
            if negative is None:
                raise ValueError(f"guidance_scale needs negative_{name}= (model {spec.name!r} "
                                 f"has no unconditional {name})")
            uncond[name] = _checked(spec, f"negative_{name}", negative, batch_size, device)
    return cond, (uncond if guided else None)


def _checked(spec: DenoiserSpec, name: str, value: Any, batch_size: int,
             device: torch.device) -> Tensor:
    tensor = expand_conditioning(name, value, batch_size, device)
    if name == "label" and spec.num_classes > 0 and not isinstance(value, Tensor):
        bad = [v for v in tensor.tolist() if not 0 <= v < spec.num_classes]
        if bad:
            raise ValueError(f"label must be in [0, {spec.num_classes}), got {bad[0]}")
    return tensor


def expand_conditioning(name: str, value: Any, batch_size: int, device: torch.device) -> Tensor:
    """A user-given conditioning value as a tensor whose first axis is the batch.

    An int (or a sequence of batch_size ints) becomes a long [batch_size] tensor; a tensor whose
    first axis is 1 is repeated to batch_size; a tensor with batch_size rows is used as is."""
    if isinstance(value, Tensor):
        tensor = value.to(device)
    elif isinstance(value, bool):
        raise TypeError(f"{name} must be an int, a sequence of ints or a tensor, got bool")
    elif isinstance(value, int):
        tensor = torch.full((batch_size,), value, dtype=torch.long, device=device)
    elif isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        tensor = torch.tensor(list(value), dtype=torch.long, device=device)
    else:
        raise TypeError(f"{name} must be an int, a sequence of ints or a tensor, "
                        f"got {type(value).__name__}")
    if tensor.dim() == 0:
        tensor = tensor.reshape(1)
    if tensor.shape[0] == 1 and batch_size > 1:
        tensor = tensor.expand(batch_size, *tensor.shape[1:])
    if tensor.shape[0] != batch_size:
        raise ValueError(f"{name} must have 1 or batch_size={batch_size} rows (one per video), "
                         f"got {tensor.shape[0]}")
    return tensor


def stack_guidance(cond: Mapping[str, Tensor], uncond: Mapping[str, Tensor] | None
                   ) -> dict[str, Tensor]:
    """The forward's conditioning: ``cond`` alone, or ``[uncond; cond]`` on the batch axis for
    classifier-free guidance (the samplers split the prediction the same way). The one place the
    guidance rows are stacked."""
    if uncond is None:
        return dict(cond)
    if set(cond) != set(uncond):
        raise ValueError(f"guidance needs an unconditional value for every conditioning input: "
                         f"got {sorted(cond)} and {sorted(uncond)}")
    return {k: torch.cat([uncond[k].to(cond[k].dtype), cond[k]]) for k in cond}


__all__ = ["LAYOUTS", "Denoiser", "DenoiserSpec", "conditioning_rows", "expand_conditioning",
           "stack_guidance"]

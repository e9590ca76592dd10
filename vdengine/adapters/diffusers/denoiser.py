"""``DiffusersDenoiser``: a diffusers video UNet, accelerated, behind vdengine's Denoiser protocol.

The engine calls ``denoiser(x [N, F, C, H, W], t [N] or [1], **conditioning)`` with N = B (or
2B with guidance, [uncond; cond] stacked). Per family:

- UNet3D (ModelScope) and AnimateDiff take [N, C, F, H, W]: x is handed over as a permuted view
  and the output permuted back (both views of the same frame-major memory: the UNets reshape it
  to [N·F, C, H, W] without a copy). AnimateDiff wants encoder_hidden_states per frame,
  [N·F, L, D]: the adapter repeats the per-video embeddings.
- SVD takes [N, F, C, H, W] with the image latents concatenated on the channel axis: the adapter
  concatenates ``image_latents`` [N, 4, H, W] (repeated over frames) to x.

One forward per call, no host sync (shape checks only), under torch.inference_mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vdengine.adapters.diffusers.accelerate import (
    AccelerationReport,
    accelerate,
    acceleration_report,
)
from vdengine.adapters.diffusers.conditioning import svd_conditioning, text_conditioning
from vdengine.adapters.diffusers.families import family_of
from vdengine.adapters.diffusers.options import AccelerationOptions
from vdengine.adapters.diffusers.scheduling import scheduler_config, spec_schedule
from vdengine.denoiser import DenoiserSpec

__all__ = ["DiffusersDenoiser"]


class DiffusersDenoiser:
    """A UNet3DConditionModel, UNetMotionModel or UNetSpatioTemporalConditionModel as a Denoiser.

    Args:
        unet: the diffusers model (its device and dtype are the denoiser's).
        scheduler: its scheduler (object or config dict): the spec's noise schedule and
            prediction type come from it.
        options: which modules to replace with vdengine's fused ones (default: all); the
            ``AccelerationOptions.none()`` denoiser runs diffusers' own modules.
        inplace: accelerate ``unet`` itself rather than a copy sharing its weights (the default
            leaves the given model as diffusers built it).

    Attributes:
        spec: the DenoiserSpec (layout BCFHW for UNet3D/AnimateDiff, BFCHW for SVD; channels =
            the noisy latents' (4 for SVD, whose image latents the adapter concatenates); no
            fixed window; max_frames = AnimateDiff's motion_max_seq_length).
        unet: the accelerated model; ``report`` what was replaced (see acceleration_report).
    """

    def __init__(self, unet: nn.Module, scheduler: Any, *,
                 options: AccelerationOptions | None = None, inplace: bool = False) -> None:
        self.family = family_of(unet)
        self.unet, _ = accelerate(unet, options, inplace=inplace)
        config = unet.config
        schedule, prediction = spec_schedule(scheduler_config(scheduler))
        self.kind = type(unet).__name__
        max_frames = None  # AnimateDiff: its motion modules' position table
        if self.kind == "UNetMotionModel":
            max_frames = int(config.get("motion_max_seq_length", 32))
        size = config.get("sample_size")
        if isinstance(size, int):
            size = (size, size)
        self.spec = DenoiserSpec(
            name=self.kind, channels=int(config.out_channels),
            sample_size=None if size is None else (int(size[0]), int(size[1])),
            window=None, max_frames=max_frames, prediction_type=prediction, schedule=schedule,
            layout=self.family.layout, conditioning=self.family.conditioning)
        self._cross_dim = int(config.cross_attention_dim)
        self._image_channels = int(config.in_channels) - int(config.out_channels)

    @property
    def report(self) -> AccelerationReport:
        """What was replaced and how many calls fell back to PyTorch since loading."""
        return acceleration_report(self.unet)

    def _weight(self) -> Tensor:
        return next(self.unet.parameters())

    @property
    def device(self) -> torch.device:
        return self._weight().device

    @property
    def dtype(self) -> torch.dtype:
        return self._weight().dtype

    def prepare_conditioning(self, batch_size: int, guided: bool, **user_kwargs: Any
                             ) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
        """Map the user's keywords (conditioning.py lists them) to per-video forward inputs:
        (cond, uncond) dicts of batch-first tensors on the model's device and dtype (uncond None
        without guidance). vdengine.denoiser.prepare_conditioning stacks them [uncond; cond]."""
        like = self._weight()
        if self.kind == "UNetSpatioTemporalConditionModel":
            count = self.unet.add_embedding.linear_1.in_features // int(
                self.unet.config.addition_time_embed_dim)
            return svd_conditioning(batch_size, guided, self._cross_dim, self._image_channels,
                                    count, like, self.kind, **user_kwargs)
        return text_conditioning(batch_size, guided, self._cross_dim, like, self.kind,
                                 **user_kwargs)

    def __call__(self, x: Tensor, t: Tensor, **conditioning: Tensor) -> Tensor:
        """The prediction [N, F, C, H, W] (spec.prediction_type) for x [N, F, C, H, W] at
        timestep t ([N], [1] or a number), in x's dtype."""
        if x.dim() != 5 or x.shape[2] != self.spec.channels:
            raise ValueError(f"x must be [N, F, {self.spec.channels}, H, W], got shape "
                             f"{list(x.shape)}")
        unknown = sorted(set(conditioning) - set(self.spec.conditioning))
        if unknown:
            raise ValueError(f"unexpected conditioning {', '.join(unknown)} for {self.kind} "
                             f"(it takes {', '.join(self.spec.conditioning)})")
        dtype, device = self.dtype, self.device
        n, f = x.shape[:2]
        t = torch.as_tensor(t, device=device)
        inputs = {k: v.to(device=device, dtype=dtype) for k, v in conditioning.items()}
        ehs = inputs.get("encoder_hidden_states")
        with torch.inference_mode():
            sample = x.to(device=device, dtype=dtype)
            if self.kind == "UNetSpatioTemporalConditionModel":
                out = self._svd(sample, t, ehs, inputs)
            else:
                if ehs is None:
                    raise ValueError(f"{self.kind} needs encoder_hidden_states [N, L, D]")
                if self.kind == "UNetMotionModel":  # the motion UNet wants them per frame
                    ehs = ehs.repeat_interleave(f, dim=0, output_size=n * f)
                out = self.unet(sample.permute(0, 2, 1, 3, 4), t, encoder_hidden_states=ehs,
                                return_dict=False)[0].permute(0, 2, 1, 3, 4)
        return out.to(x.dtype)

    def _svd(self, sample: Tensor, t: Tensor, ehs: Tensor | None, inputs: dict[str, Tensor]
             ) -> Tensor:
        latents, ids = inputs.get("image_latents"), inputs.get("added_time_ids")
        if ehs is None or latents is None or ids is None:
            raise ValueError("UNetSpatioTemporalConditionModel needs encoder_hidden_states, "
                             "image_latents and added_time_ids (see prepare_conditioning)")
        n, f, _, h, w = sample.shape
        if latents.shape[0] != n or tuple(latents.shape[2:]) != (h, w):
            raise ValueError(f"image_latents must be [{n}, C, {h}, {w}] to match x, got "
                             f"{list(latents.shape)}")
        frames = latents[:, None].expand(n, f, *latents.shape[1:])
        model_input = torch.cat([sample, frames], dim=2)
        return self.unet(model_input, t, encoder_hidden_states=ehs, added_time_ids=ids,
                         return_dict=False)[0]

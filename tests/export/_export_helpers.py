"""Helpers of the export tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import torch


def make_tiny_model(seed: int = 0):
    """A tiny_config VideoUNet whose zero-initialised layers are perturbed, so that every layer
    (PosGN tables, temporal branches, output conv) contributes to the output."""
    from vdengine.models import VideoUNet, tiny_config

    torch.manual_seed(seed)
    net = VideoUNet(tiny_config())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return net.eval()


def sample_frames(denoiser, *, batch: int, frames: int, steps: int, seed: int,
                  label=None, guidance_scale: float | None = None):
    """uint8 frames [B, F, H, W, 3] of a DDIM run of ``denoiser`` (any vdengine Denoiser) from
    seeded CPU noise, with the engine's conditioning path (conditioning_rows + stack_guidance: labels, and the
    [uncond; cond] rows under guidance)."""
    from vdengine.denoiser import conditioning_rows, stack_guidance
    from vdengine.samplers import get_sampler
    from vdengine.video import Video

    spec = denoiser.spec
    h, w = spec.sample_size
    noise = torch.randn(batch, frames, spec.channels, h, w,
                        generator=torch.Generator().manual_seed(seed))
    user = {} if label is None else {"label": label}
    cond = stack_guidance(*conditioning_rows(denoiser, batch, guidance_scale is not None, user,
                                             torch.device("cpu")))
    out = get_sampler("ddim")(denoiser, noise, spec.schedule, steps,
                              prediction_type=spec.prediction_type,
                              guidance_scale=guidance_scale, extra_args=cond, disable=True)
    return Video.from_tensor(out.float()).frames

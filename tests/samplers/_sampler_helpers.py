"""Helpers shared by the sampler tests: a fixed toy video denoiser, seeded noise, and the two
loops compared (diffusers' scheduler loop and vdengine's sampler).

Imported as a plain module (tests/samplers is on sys.path under pytest's default import mode);
the name is specific so that it cannot collide with a helper module of another test folder.
"""

from __future__ import annotations

import torch
from torch import nn

B, F, C, H, W = 2, 3, 4, 8, 8


class TinyDenoiser(nn.Module):
    """A fixed, seeded video denoiser [B, F, C, H, W] -> same: per-frame 3×3 conv, a sinusoidal
    timestep embedding and an optional per-video conditioning vector [B, C]."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(C, C, 3, padding=1)
        with torch.no_grad():
            for p in self.conv.parameters():
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
        self.register_buffer("freq", torch.randn(C, generator=g))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None):
        b, f, c, h, w = x.shape
        assert t.dtype == torch.float32 and t.shape == (b,)
        temb = torch.sin(t[:, None] / 1000.0 * 3.0 * self.freq)  # [b, C]
        y = self.conv(x.reshape(b * f, c, h, w)).reshape(b, f, c, h, w)
        y = y + temb[:, None, :, None, None]
        if cond is not None:
            y = y + cond[:, None, :, None, None]
        return 0.9 * x + 0.3 * torch.tanh(y)


def noise(seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(B, F, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def conditioning(guided: bool) -> dict[str, torch.Tensor]:
    """extra_args for TinyDenoiser: [uncond; cond] rows when guided, else the cond rows."""
    g = torch.Generator().manual_seed(5)
    uncond, cond = torch.zeros(B, C), torch.randn(B, C, generator=g)
    return {"cond": torch.cat([uncond, cond]) if guided else cond}


def combine(out: torch.Tensor, guidance) -> torch.Tensor:
    """u + s·(c − u) on [uncond; cond] rows; a per-frame scale [F] broadcasts over [B, F, ...]."""
    u, c = out.chunk(2)
    if isinstance(guidance, torch.Tensor):
        guidance = guidance.reshape(1, -1, *([1] * (out.dim() - 2)))
    return u + guidance * (c - u)


def diffusers_loop(scheduler, model, x: torch.Tensor, num_steps: int, guidance=None,
                   step_kw: dict | None = None) -> torch.Tensor:
    """The loop a diffusers pipeline runs: set_timesteps, x·init_noise_sigma, then per step
    scale_model_input, one forward (CFG rows stacked), combine, step."""
    scheduler.set_timesteps(num_steps)
    extra = conditioning(guidance is not None)
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x_in = torch.cat([x, x]) if guidance is not None else x
        x_in = scheduler.scale_model_input(x_in, t)
        with torch.no_grad():
            out = model(x_in, t.float().expand(x_in.shape[0]), **extra)
        if guidance is not None:
            out = combine(out, guidance)
        x = scheduler.step(out, t, x, **(step_kw or {})).prev_sample
    return x


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype
    return (a - b).abs().max().item()

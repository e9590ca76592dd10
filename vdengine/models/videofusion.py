"""VideoFusion — Decomposed Diffusion Models (Luo et al., CVPR 2023), as one engine Denoiser.

The noise of frame i is decomposed (design/SEEDS.md §3): ε_i = √λ·b + √(1−λ)·r_i with a base
noise b shared by every frame of a clip and a residual r_i per frame. Two networks estimate the
parts:

- the base generator (an ImageUNet, vdengine.models.imageunet) sees only the middle frame
  x_t^⌊F/2⌋ and estimates b̂ — once per video per step, whatever F is;
- the residual generator (a VideoUNet: PosGN ResBlocks whose frame coordinate is the frame
  index i, plus Video LDM's temporal layers) estimates r̂_i for every frame. It sees x_t with the
  estimated base part removed, x_t^i − √(1−ᾱ_t)·√λ·b̂ (the paper removes the base noise first,
  then the residual noise);

and the prediction is ε̂_i = √λ·b̂ + √(1−λ)·r̂_i. ``VideoFusion`` wraps both as ONE Denoiser (window
F, ε-prediction, class labels): generate(), guidance, batching, samplers and long videos work
unchanged. Its natural long-video strategy keeps b fixed and varies r_i:
``long_video=SharedNoise(lam=model.config.lam)`` (``model.default_long_video``).

Training (vdengine.balls.train_families): x_t^i = √ᾱ_t·x^i + √(1−ᾱ_t)·ε_i with the decomposed
ε_i; loss ‖ε̂_i − ε_i‖² with a stop-gradient on b̂ for every frame but the middle one (the
paper's joint training); optionally plus ‖b̂ − b‖² + ‖r̂ − r‖².

No public code of the decomposition exists (SEEDS.md): this follows the paper's abstract and
figures; λ is configurable (0.5, the paper's best).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vdengine.denoiser import DenoiserSpec
from vdengine.models.config import ModelConfig
from vdengine.models.family_config import FamilyConfig
from vdengine.models.imageunet import ImageUNet, RowTables, UNetConfig, row_coords
from vdengine.models.layers import set_ops
from vdengine.models.unet import VideoUNet

#: ModelConfig fields a VideoFusion config may set for its residual generator (the rest follow
#: the family config: size, window, classes, schedule; no context; ε-prediction).
RESIDUAL_FIELDS = ("base_channels", "channel_mult", "num_res_blocks", "attention_levels",
                   "temporal_conv_levels", "head_dim", "num_groups", "class_embed_dim",
                   "patch_size", "mix_factor_init", "project_inputs")


def _default_residual() -> dict:
    return {"base_channels": 24, "channel_mult": [1, 2], "attention_levels": [1],
            "temporal_conv_levels": [0, 1], "head_dim": 16, "num_groups": 8,
            "class_embed_dim": 32, "patch_size": 2}


@dataclass
class VideoFusionConfig(FamilyConfig):
    """Hyper-parameters of a VideoFusion model.

    window: frames per clip F (the residual generator's window); the base generator sees frame
        ⌊F/2⌋ of each window.
    lam: λ, the share of the base noise: ε_i = √λ·b + √(1−λ)·r_i.
    base: the base generator's UNet sizes.
    residual: the residual generator's VideoUNet sizes (RESIDUAL_FIELDS of ModelConfig).
    """

    FAMILY = "videofusion"

    name: str = "videofusion32"
    window: int = 16
    lam: float = 0.5
    base: UNetConfig = field(default_factory=lambda: UNetConfig(base_channels=24))
    residual: dict = field(default_factory=_default_residual)

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.lam <= 1.0:
            self.bad(f"lam (λ) must be in [0, 1], got {self.lam}")
        if self.window < 1:
            self.bad(f"window must be >= 1, got {self.window}")
        unknown = sorted(set(self.residual) - set(RESIDUAL_FIELDS))
        if unknown:
            self.bad(f"residual: unknown or fixed field(s) {unknown} (allowed: "
                     f"{', '.join(RESIDUAL_FIELDS)})")
        self.residual_config()  # validates the VideoUNet sizes

    def residual_config(self) -> ModelConfig:
        """The residual generator's VideoUNet config."""
        return ModelConfig(
            name=f"{self.name}-residual", image_size=self.image_size, channels=self.channels,
            window=self.window, num_classes=self.num_classes, context=False,
            prediction_type="epsilon", schedule=self.schedule,
            num_train_timesteps=self.num_train_timesteps, **self.residual)


class VideoFusion(nn.Module):
    """The decomposed denoiser: forward(x [B, F, C, H, W], t, label=None) → ε̂ [B, F, C, H, W]."""

    def __init__(self, config: VideoFusionConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.base = ImageUNet(cfg.base, cfg.channels, cfg.channels, cfg.num_classes)
        self.residual = VideoUNet(cfg.residual_config())
        ab = cfg.noise_schedule().alphas_cumprod.to(torch.float32)
        self.register_buffer("alphas_cumprod", ab, persistent=False)
        null = {"label": cfg.num_classes} if cfg.num_classes > 0 else {}
        self.spec = DenoiserSpec(
            name=cfg.name, channels=cfg.channels, sample_size=(cfg.image_size,) * 2,
            window=cfg.window, prediction_type="epsilon", schedule=cfg.noise_schedule(),
            conditioning=("label",) if cfg.num_classes > 0 else (), null_conditioning=null,
            num_classes=cfg.num_classes)

    # ------------------------------------------------------------------------------ engine
    @property
    def default_long_video(self):
        """VideoFusion's long videos: b fixed, r_i varying — SharedNoise with the model's λ."""
        from vdengine.longvideo import SharedNoise

        return SharedNoise(lam=self.config.lam)

    def networks(self) -> dict[str, nn.Module]:
        """The sub-networks whose evaluations are counted (benchmarks, tests)."""
        return {"base": self.base, "residual": self.residual}

    def set_ops(self, mode: str) -> VideoFusion:
        return set_ops(self, mode)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ----------------------------------------------------------------------------- forward
    def combine(self, base: Tensor, residual: Tensor) -> Tensor:
        """ε̂_i = √λ·b̂ + √(1−λ)·r̂_i: base [B, C, H, W] (or [B, F, C, H, W]), residual
        [B, F, C, H, W] → [B, F, C, H, W]."""
        lam = self.config.lam
        if base.dim() == 4:
            base = base[:, None]
        return math.sqrt(lam) * base + math.sqrt(1.0 - lam) * residual

    def parts(self, x: Tensor, t: Tensor | float, label: Tensor | None = None
              ) -> tuple[Tensor, Tensor]:
        """(b̂ [B, C, H, W], r̂ [B, F, C, H, W]): the base generator on the middle frame, the
        residual generator on every frame with √(1−ᾱ_t)·√λ·b̂ removed (b̂ detached there: the
        base generator learns from its own term only)."""
        cfg = self.config
        if not isinstance(x, Tensor) or x.dim() != 5 or tuple(x.shape[2:]) != (
                cfg.channels, cfg.image_size, cfg.image_size):
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be [B, F, {cfg.channels}, {cfg.image_size}, "
                             f"{cfg.image_size}], got {got}")
        b, f = x.shape[:2]
        if f > cfg.window:
            raise ValueError(f"x has {f} frames, more than the model window {cfg.window}")
        t_rows, n_rows = row_coords(t, 0.0, b, x.device)
        tables = RowTables(t_rows, n_rows, cfg.num_train_timesteps)
        emb = self.base.class_embedding(label, b, x.device)
        base = self.base(x[:, f // 2], tables, emb)  # one frame per video
        t_idx = torch.as_tensor(t, device=x.device).reshape(-1).long().clamp(
            0, cfg.num_train_timesteps - 1)
        ab = self.alphas_cumprod.to(x.device)[t_idx].to(x.dtype)  # [1] or [B]: no host sync
        coef = ((1.0 - ab).sqrt() * math.sqrt(cfg.lam)).view(-1, 1, 1, 1, 1)
        residual = self.residual(x - coef * base.detach()[:, None], t, label)
        return base, residual

    def forward(self, x: Tensor, t: Tensor | float, label: Tensor | None = None) -> Tensor:
        """x [B, F, C, H, W] noisy frames, t scalar/[1]/[B] → ε̂ [B, F, C, H, W]."""
        return self.combine(*self.parts(x, t, label))


def decomposed_noise(batch_size: int, num_frames: int, frame_shape: tuple[int, int, int],
                     lam: float, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(ε, b, r): ε [B, F, C, H, W] = √λ·b + √(1−λ)·r with b [B, 1, C, H, W] shared by the
    frames of a clip and r [B, F, C, H, W] per frame, drawn on the CPU from `generator` (base
    first, as vdengine.longvideo.NoiseSource)."""
    b = torch.randn((batch_size, 1, *frame_shape), generator=generator)
    r = torch.randn((batch_size, num_frames, *frame_shape), generator=generator)
    return math.sqrt(lam) * b + math.sqrt(1.0 - lam) * r, b, r


__all__ = ["RESIDUAL_FIELDS", "VideoFusion", "VideoFusionConfig", "decomposed_noise"]

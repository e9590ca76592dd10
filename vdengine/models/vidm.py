"""VIDM — Video Implicit Diffusion Models (Mei & Patel, AAAI 2023), as an engine model type.

Two diffusion models (design/SEEDS.md §1):

- ``ContentGenerator``: an image denoiser for frame 0, with VIDM's sampling-space truncation: a
  learned image-shaped constant c [1, C, H, W] (initialised with randn) concatenated to x_t on
  the channel axis, ε_θ(cat[x_t, c], t).
- ``MotionGenerator``: denoises frame n ≥ 1 from fresh noise. Every ResBlock is normalised by
  PosGN with coordinates (t, n, h, w) (vdengine.ops.posgn; the tables depend only on (t, n) and
  are shared by every video of a step and both guidance halves). It is conditioned on
  - the implicit motion condition z = v(frame 0, frame n−1), concatenated to x_t. The authors
    use SPyNet optical flow; SPyNet's weights cannot be downloaded here, so ``MotionEncoder``,
    a small conv net trained jointly with the generator, stands in for it (z has
    ``motion_channels`` channels, 2 like a flow field by default);
  - the adaptive feature residual of the clean frame 0: an encoder beside the UNet's input
    blocks, ``r_k = E_k(r_{k−1}); h_k = r_k + 0.2 · U_k(h_{k−1})`` (vdengine.models.imageunet).

Both implement the Denoiser protocol with window 1 (x [B, 1, C, H, W]), ε-prediction, the
linear β schedule and class labels (null class for classifier-free guidance); the motion
generator's conditioning keywords are ``first_frame=`` [B, C, H, W], ``prev_frame=`` [B, C, H, W]
and ``frame_index=`` [B] (ints >= 1; a CPU tensor is read without a device sync).

``sample_frames`` is VIDM's Algorithm 2: frame 0 by the content generator, then frames 1..N−1
one at a time by the motion generator, each frame a full few-step sampling run
(vdengine.sampling.GuidedSampler) batched across videos and guidance halves. Only frame 0 and
the previous frame are kept, so memory does not grow with N.

Frame coordinate: n maps linearly from [0, num_frames − 1] (the training length) onto [−1, 1];
frames beyond the training length keep n = 1 (clamped: the PosGN MLP was never trained beyond).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vdengine.denoiser import DenoiserSpec
from vdengine.models.family_config import FamilyConfig
from vdengine.models.imageunet import ImageUNet, RowTables, UNetConfig, row_coords
from vdengine.models.layers import set_ops
from vdengine.sampling import GuidedSampler, SamplingStats


@dataclass
class VIDMConfig(FamilyConfig):
    """Hyper-parameters of a VIDM (content + motion generators).

    num_frames: the training video length (frames per clip); the frame coordinate n is mapped
        over it and it is the default length of generated videos.
    content, motion: UNet sizes of the two generators.
    motion_channels: channels of the motion condition z (2, like SPyNet's flow).
    motion_hidden: width of the motion encoder.
    residual_scale: the adaptive feature residual's weight on the UNet's own blocks (0.2).
    truncation: use the content generator's sampling-space truncation constant.
    """

    FAMILY = "vidm"

    name: str = "vidm32"
    num_frames: int = 16
    content: UNetConfig = field(default_factory=lambda: UNetConfig(base_channels=24))
    motion: UNetConfig = field(default_factory=lambda: UNetConfig(base_channels=24))
    motion_channels: int = 2
    motion_hidden: int = 32
    residual_scale: float = 0.2
    truncation: bool = True

    def validate(self) -> None:
        super().validate()
        if self.num_frames < 2:
            self.bad(f"num_frames must be >= 2, got {self.num_frames}")
        if self.motion_channels < 1 or self.motion_hidden < 1:
            self.bad("motion_channels and motion_hidden must be >= 1")

    def frame_coord(self, n: Tensor) -> Tensor:
        """Frame positions n (>= 0) → PosGN coordinates in [−1, 1] (clamped beyond the training
        length)."""
        return (n.float() * (2.0 / (self.num_frames - 1)) - 1.0).clamp(max=1.0)

    def spec(self, role: str, conditioning: tuple[str, ...]) -> DenoiserSpec:
        null = {"label": self.num_classes} if self.num_classes > 0 else {}
        label = ("label",) if self.num_classes > 0 else ()
        return DenoiserSpec(
            name=f"{self.name}-{role}", channels=self.channels,
            sample_size=(self.image_size, self.image_size), window=1,
            prediction_type="epsilon", schedule=self.noise_schedule(),
            conditioning=label + conditioning, null_conditioning=null,
            num_classes=self.num_classes)


def _frame_input(x: Tensor, cfg: VIDMConfig, name: str = "x") -> Tensor:
    """x [B, 1, C, H, W] → [B, C, H, W], or a one-line ValueError."""
    want = (cfg.channels, cfg.image_size, cfg.image_size)
    if not isinstance(x, Tensor) or x.dim() != 5 or x.shape[1] != 1 or tuple(x.shape[2:]) != want:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be [B, 1, {want[0]}, {want[1]}, {want[2]}] (one frame per "
                         f"video), got {got}")
    return x[:, 0]


def _clean_frame(value: Any, name: str, like: Tensor) -> Tensor:
    """A conditioning frame [B, C, H, W] matching x's rows, or a one-line error."""
    if value is None:
        raise ValueError(f"the motion generator needs {name}= [B, C, H, W]")
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a tensor [B, C, H, W], got {type(value).__name__}")
    if tuple(value.shape) != tuple(like.shape):
        raise ValueError(f"{name} must be {tuple(like.shape)} (one clean frame per row of x), "
                         f"got {tuple(value.shape)}")
    return value.to(like.dtype)


class ContentGenerator(nn.Module):
    """VIDM's content generator: ε_θ(cat[x_t, c], t, label) for frame 0. Denoiser, window 1."""

    def __init__(self, config: VIDMConfig) -> None:
        super().__init__()
        self.config = cfg = config
        extra = cfg.channels if cfg.truncation else 0
        self.unet = ImageUNet(cfg.content, cfg.channels + extra, cfg.channels, cfg.num_classes)
        self.truncation = (
            nn.Parameter(torch.randn(1, cfg.channels, cfg.image_size, cfg.image_size))
            if cfg.truncation else None)
        self.spec = cfg.spec("content", ())

    def denoise(self, x: Tensor, tables: RowTables, emb: Tensor | None) -> Tensor:
        """x [N, C, H, W] → ε̂ [N, C, H, W] (the tensor-only part, also what ONNX exports)."""
        if self.truncation is not None:
            c = self.truncation.to(x.dtype).expand(x.shape[0], -1, -1, -1)
            x = torch.cat([x, c], dim=1)
        return self.unet(x, tables, emb)

    def forward(self, x: Tensor, t: Tensor | float, label: Tensor | None = None) -> Tensor:
        """x [B, 1, C, H, W] noisy frame 0, t scalar/[1]/[B] → ε̂ [B, 1, C, H, W]."""
        xi = _frame_input(x, self.config)
        b = xi.shape[0]
        t_rows, n_rows = row_coords(t, -1.0, b, x.device)  # frame 0: n coordinate −1
        tables = RowTables(t_rows, n_rows, self.config.num_train_timesteps)
        emb = self.unet.class_embedding(label, b, x.device)
        return self.denoise(xi, tables, emb)[:, None]


class MotionEncoder(nn.Module):
    """The implicit motion condition z = v(frame 0, frame n−1): [B, 2C, H, W] → [B, M, H, W].

    Stands in for the authors' SPyNet flow (whose weights cannot be downloaded here): a small
    conv net (full resolution, one stride-2 stage for a wider view) trained jointly with the
    motion generator, so z is whatever motion code helps it, not an optical flow."""

    def __init__(self, channels: int, hidden: int, out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * channels, hidden, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(),
            nn.Upsample(scale_factor=2.0, mode="nearest"),
            nn.Conv2d(hidden, out, 3, padding=1))

    def forward(self, first: Tensor, prev: Tensor) -> Tensor:
        return self.net(torch.cat([first, prev], dim=1))


class MotionGenerator(nn.Module):
    """VIDM's motion generator for frame n ≥ 1. Denoiser, window 1.

    forward(x [B, 1, C, H, W], t, label=None, first_frame=[B, C, H, W], prev_frame=[B, C, H, W],
    frame_index=[B] or int) → ε̂ [B, 1, C, H, W]."""

    def __init__(self, config: VIDMConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.motion_encoder = MotionEncoder(cfg.channels, cfg.motion_hidden, cfg.motion_channels)
        self.unet = ImageUNet(cfg.motion, cfg.channels + cfg.motion_channels, cfg.channels,
                              cfg.num_classes, reference_channels=cfg.channels,
                              residual_scale=cfg.residual_scale)
        self.spec = cfg.spec("motion", ("first_frame", "prev_frame", "frame_index"))

    def denoise(self, x: Tensor, tables: RowTables, emb: Tensor | None, first: Tensor,
                prev: Tensor) -> Tensor:
        """x [N, C, H, W], clean first/previous frames [N, C, H, W] → ε̂ [N, C, H, W]."""
        z = self.motion_encoder(first, prev)
        return self.unet(torch.cat([x, z], dim=1), tables, emb, reference=first)

    def forward(self, x: Tensor, t: Tensor | float, label: Tensor | None = None,
                first_frame: Tensor | None = None, prev_frame: Tensor | None = None,
                frame_index: Tensor | int | None = None) -> Tensor:
        xi = _frame_input(x, self.config)
        first = _clean_frame(first_frame, "first_frame", xi)
        prev = _clean_frame(prev_frame, "prev_frame", xi)
        b = xi.shape[0]
        n = self._frame_index(frame_index, b)
        t_rows, n_rows = row_coords(t, self.config.frame_coord(n), b, x.device)
        tables = RowTables(t_rows, n_rows, self.config.num_train_timesteps)
        emb = self.unet.class_embedding(label, b, x.device)
        return self.denoise(xi, tables, emb, first, prev)[:, None]

    @staticmethod
    def _frame_index(frame_index: Any, batch: int) -> Tensor:
        """frame_index as a CPU long tensor of 1 or `batch` values, each >= 1."""
        if frame_index is None:
            raise ValueError("the motion generator needs frame_index= (an int >= 1 or [B] ints)")
        if isinstance(frame_index, bool) or not isinstance(frame_index, (int, Tensor)):
            raise TypeError(f"frame_index must be an int or a [B] tensor, got "
                            f"{type(frame_index).__name__}")
        n = torch.as_tensor(frame_index).detach().reshape(-1).cpu()  # CPU already: no sync
        if n.is_floating_point() or n.numel() not in (1, batch):
            raise ValueError(f"frame_index must be an int or [B={batch}] ints, got "
                             f"{tuple(torch.as_tensor(frame_index).shape)} {n.dtype}")
        if bool((n < 1).any()):
            raise ValueError(f"frame_index must be >= 1 (frame 0 is the content generator's), "
                             f"got {int(n.min())}")
        return n


class VIDM(nn.Module):
    """The two generators of one VIDM model, saved and loaded together."""

    def __init__(self, config: VIDMConfig) -> None:
        super().__init__()
        self.config = config
        self.content = ContentGenerator(config)
        self.motion = MotionGenerator(config)

    @property
    def spec(self) -> DenoiserSpec:
        """The content generator's spec: what a Pipeline reads (channels, size, labels)."""
        return self.content.spec

    def networks(self) -> dict[str, nn.Module]:
        """The sub-networks whose evaluations are counted (benchmarks, tests)."""
        return {"content": self.content.unet, "motion": self.motion.unet}

    def set_ops(self, mode: str) -> VIDM:
        return set_ops(self, mode)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass
class FamilyStats:
    """Per-network sampling counters of one generate() call (name → SamplingStats)."""

    networks: dict[str, SamplingStats] = field(default_factory=dict)

    def __getitem__(self, name: str) -> SamplingStats:
        return self.networks.setdefault(name, SamplingStats())


@torch.inference_mode()
def sample_frames(
    model: VIDM,
    *,
    num_frames: int,
    batch_size: int,
    steps: int,
    sampler: str,
    sampler_options: Mapping[str, Any],
    cond: Mapping[str, Tensor],
    uncond: Mapping[str, Tensor] | None,
    guidance_scale: float | None,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
    stats: FamilyStats | None = None,
) -> Iterator[Tensor]:  # float [B, 1, C, H, W] in [−1, 1], frame 0 first
    """VIDM's Algorithm 2 with a few-step sampler: yields the B videos' frames one at a time.

    cond / uncond: the label rows (vdengine.denoiser.conditioning_rows of the content
    generator); the motion generator gets the same labels plus its frame conditioning, identical
    in both guidance halves. Each frame's noise comes from `generator` (on the CPU) in frame
    order, so a seed fixes the videos. Memory: frame 0 and the previous frame.
    """
    cfg = model.config
    stats = FamilyStats() if stats is None else stats
    shape = (batch_size, 1, cfg.channels, cfg.image_size, cfg.image_size)
    schedule = cfg.noise_schedule()

    def run(net: nn.Module, role: str, extra: dict[str, Tensor]) -> Tensor:
        loop = GuidedSampler(
            net, schedule, steps=steps, sampler=sampler, sampler_options=sampler_options,
            cond={**cond, **extra}, uncond=None if uncond is None else {**uncond, **extra},
            guidance_scale=guidance_scale, generator=generator, stats=stats[role])
        x = torch.randn(shape, generator=generator, dtype=torch.float32).to(device, dtype)
        stats[role].windows += 1
        return loop.sample(x).clamp_(-1.0, 1.0)

    first = run(model.content, "content", {})  # [B, 1, C, H, W]
    yield first
    first, prev = first[:, 0], first[:, 0]
    for n in range(1, num_frames):
        index = torch.full((batch_size,), n, dtype=torch.long)  # on the CPU: read without sync
        frame = run(model.motion, "motion",
                    {"first_frame": first, "prev_frame": prev, "frame_index": index})
        yield frame
        prev = frame[:, 0]


__all__ = ["VIDM", "ContentGenerator", "FamilyStats", "MotionEncoder", "MotionGenerator",
           "VIDMConfig", "sample_frames"]

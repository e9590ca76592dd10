"""Building blocks of vdengine's video denoisers.

- PosGN (VIDM): GroupNorm whose (scale, shift) come per pixel and per channel from an MLP of the
  coordinates (t, frame, h, w). The tables never depend on x, so ``PosGNTables`` computes them
  once per forward call and layer, with M = F rows when every video shares the timestep (the op
  broadcasts row i % M over the batch and both guidance halves) and M = B·F when it does not.
- ResBlock: PosGN+SiLU → conv3×3 (+ class bias) → PosGN+SiLU → zero-initialised conv3×3.
- TemporalAttention / TemporalConvBlock (Video LDM): layers mixing frames, merged into the spatial
  stream as α·spatial + (1−α)·temporal with α = sigmoid(mix_factor).

Every layer that calls a vdengine op has an ``ops_mode``: "fused" (vdengine.ops, the C++ kernels,
inference only), "reference" (vdengine.ops.reference, pure PyTorch with autograd) or "auto"
(reference when autograd must flow through the op's inputs, fused otherwise).
``set_ops(module, mode)`` sets it on a whole tree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vdengine.ops._checks import memory_format

OPS_MODES = ("auto", "fused", "reference")


def _ops(mode: str, *tensors: Tensor | None):
    """The op namespace for ``mode``; "auto" → reference when autograd must flow through
    ``tensors`` (grad enabled and one of them requires grad), else the fused ops."""
    import vdengine.ops as fused
    from vdengine.ops import reference

    if mode == "auto":
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in tensors
        )
        mode = "reference" if needs_grad else "fused"
    return fused if mode == "fused" else reference


def set_ops(module: nn.Module, mode: str) -> nn.Module:
    """Make every op-calling layer under ``module`` use "fused", "reference" or "auto" ops."""
    if mode not in OPS_MODES:
        raise ValueError(f"ops mode must be one of {OPS_MODES}, got {mode!r}")
    for m in module.modules():
        if hasattr(m, "ops_mode"):
            m.ops_mode = mode
    return module


def dense(x: Tensor) -> Tensor:
    """x if it is contiguous as NCHW or as channels-last (what the fused ops read), else a
    contiguous copy in the layout its strides suggest."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous(memory_format=torch.channels_last if x.dim() == 4 and
                        x.stride(1) == 1 else torch.contiguous_format)


def frames_as_height(x: Tensor, num_frames: int) -> Tensor:
    """[B·F, C, H, W] → [B, C, F, H·W]: frames as the height of a 2-D image, so a (3,1,1) conv
    over frames is a (3,1) Conv2d. A view for channels-last x (memory [B, F, H, W, C] is NHWC of
    [B, C, F, H·W]); NCHW x gives a strided view that the conv reads as it is."""
    bf, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(bf // num_frames, num_frames, h * w, c).permute(0, 3, 1, 2)


def height_as_frames(x: Tensor, h: int, w: int) -> Tensor:
    """Inverse of frames_as_height: [B, C, F, H·W] → [B·F, C, H, W] (a view for channels-last)."""
    b, c, f, _ = x.shape
    return x.permute(0, 2, 3, 1).reshape(b * f, h, w, c).permute(0, 3, 1, 2)


def zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


# --------------------------------------------------------------------------------------- PosGN


def linspace_coord(n: int, device=None, dtype=None) -> Tensor:
    """n positions mapped linearly onto [−1, 1] (a single position maps to 0)."""
    if n == 1:
        return torch.zeros(1, device=device, dtype=dtype)
    return torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)


class PosGNTables:
    """Per-forward cache of PosGN coordinate grids and per-layer (scale, shift) tables.

    ``t_rows`` [P] holds the distinct timesteps of the batch, in period order: video b uses
    t_rows[b % P]. P = 1 when all videos share t (sampling) — tables then have M = F rows and the
    op's i % M broadcast shares them across videos and guidance halves; P = B when every video has
    its own t (training), M = B·F.
    """

    def __init__(
        self,
        t_rows: Tensor,  # [P] float timesteps in [0, num_train_timesteps)
        num_frames: int,
        window: int,
        num_train_timesteps: int,
        channels_last: bool = False,
    ) -> None:
        self.t_rows = t_rows
        self.channels_last = channels_last  # tables in the activations' memory format
        self.num_frames = num_frames
        self.t_coord = t_rows.float() * (2.0 / (num_train_timesteps - 1)) - 1.0  # [P]
        denom = max(window - 1, 1)
        n = torch.arange(num_frames, device=t_rows.device, dtype=torch.float32)
        self.n_coord = n * (2.0 / denom) - 1.0 if window > 1 else torch.zeros_like(n)  # [F]
        self._grids: dict[tuple[int, int], Tensor] = {}
        self._tables: dict[int, tuple[Tensor, Tensor]] = {}
        self.computed = 0  # number of tables computed (for tests)

    @property
    def rows(self) -> int:
        """M, the number of table rows."""
        return self.t_coord.shape[0] * self.num_frames

    def grid(self, h: int, w: int) -> Tensor:
        """Coordinates [M, h, w, 4] as (t, n, h, w) in [−1, 1]; rows ordered (period, frame)."""
        key = (h, w)
        if key not in self._grids:
            p, f = self.t_coord.shape[0], self.num_frames
            dev = self.t_coord.device
            hs = linspace_coord(h, dev, torch.float32)
            ws = linspace_coord(w, dev, torch.float32)
            g = torch.empty(p, f, h, w, 4, device=dev)
            g[..., 0] = self.t_coord[:, None, None, None]
            g[..., 1] = self.n_coord[None, :, None, None]
            g[..., 2] = hs[None, None, :, None]
            g[..., 3] = ws[None, None, None, :]
            self._grids[key] = g.reshape(p * f, h, w, 4)
        return self._grids[key]

    def table(self, layer: PosGN, h: int, w: int) -> tuple[Tensor, Tensor]:
        """(scale, shift) [M, C, h, w] of ``layer``, computed once per forward call, contiguous
        in the tables' memory format (NCHW, or channels-last)."""
        key = id(layer)
        if key not in self._tables:
            scale, shift = layer.compute_table(self.grid(h, w).to(layer.fc1.weight.dtype))
            if not self.channels_last:
                scale, shift = scale.contiguous(), shift.contiguous()
            self._tables[key] = scale, shift
            self.computed += 1
        return self._tables[key]


class PosGN(nn.Module):
    """VIDM Positional Group Normalization: (GN(x)·γ + β)·(1 + scale) + shift [→ SiLU].

    scale/shift [M, C, H, W] come from ``Linear(4, C) → sin → Linear(C, 2C) → SiLU →
    Linear(2C, 2C)`` applied to the (t, n, h, w) coordinates of every pixel. The last Linear is
    zero-initialised, so a fresh layer is a plain GroupNorm.
    """

    def __init__(self, channels: int, num_groups: int, eps: float = 1e-5) -> None:
        super().__init__()
        if channels % num_groups:
            raise ValueError(f"PosGN: channels {channels} not divisible by num_groups {num_groups}")
        self.channels, self.num_groups, self.eps = channels, num_groups, eps
        self.norm = nn.GroupNorm(num_groups, channels, eps=eps)
        self.fc1 = nn.Linear(4, channels)
        self.fc2 = nn.Linear(channels, 2 * channels)
        self.fc3 = zero_(nn.Linear(2 * channels, 2 * channels))
        self.ops_mode = "auto"

    def compute_table(self, coords: Tensor) -> tuple[Tensor, Tensor]:
        """coords [M, H, W, 4] → (scale, shift), each [M, C, H, W] channels-last contiguous.

        fc3 runs as two matmuls (its scale and shift halves), so each table comes out as its own
        contiguous [M, H, W, C] block: no copy for channels-last activations."""
        c = self.channels
        hdn = F.silu(self.fc2(torch.sin(self.fc1(coords))))
        w, b = self.fc3.weight, self.fc3.bias
        scale = F.linear(hdn, w[:c], b[:c]).permute(0, 3, 1, 2)
        shift = F.linear(hdn, w[c:], b[c:]).permute(0, 3, 1, 2)
        return scale, shift

    def forward(self, x: Tensor, tables: PosGNTables, silu: bool = True) -> Tensor:
        """x [N, C, H, W] with N % M == 0 (row i uses table row i % M)."""
        scale, shift = tables.table(self, x.shape[-2], x.shape[-1])
        # the fused kernel takes x in the tables' layout (a no-op almost always)
        x = x.contiguous(memory_format=memory_format(tables.channels_last))
        w, b = self.norm.weight, self.norm.bias
        return _ops(self.ops_mode, x, scale, shift, w, b).posgn(
            x, scale, shift, self.num_groups, w, b, self.eps, silu=silu
        )


# ------------------------------------------------------------------------------------- ResBlock


class ResBlock(nn.Module):
    """Spatial residual block on frames-as-batch features [B·F, C, H, W].

    With ``project_input`` and cin != cout, a 1×1 conv first maps the input to cout channels
    (which then is also the residual), so both PosGN layers run at cout channels: a PosGN's
    coordinate MLP costs ~6·C² multiply-adds per pixel, more than a 3×3 conv at the wide
    concatenated decoder inputs. Otherwise the classic form: PosGN(cin), conv cin → cout, and a
    1×1 conv on the skip path.
    """

    def __init__(
        self, cin: int, cout: int, num_groups: int, class_dim: int = 0, project_input: bool = False
    ) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(cin, cout, 1) if project_input and cin != cout else None
        if self.proj_in is not None:
            cin = cout
        self.norm1 = PosGN(cin, num_groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.class_proj = nn.Linear(class_dim, cout) if class_dim > 0 else None
        self.norm2 = PosGN(cout, num_groups)
        self.conv2 = zero_(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, tables: PosGNTables, class_emb: Tensor | None = None) -> Tensor:
        if self.proj_in is not None:
            x = self.proj_in(x)
        h = self.conv1(self.norm1(x, tables))
        if self.class_proj is not None and class_emb is not None:
            b = class_emb.shape[0]
            bias = self.class_proj(class_emb)  # [B, C] per video → every frame of that video
            h = (h.unflatten(0, (b, -1)) + bias[:, None, :, None, None]).flatten(0, 1)
        h = self.conv2(self.norm2(h, tables))
        return self.skip(x) + h


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# ------------------------------------------------------------------------------ temporal layers


def sinusoidal_embedding(positions: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer sinusoidal embedding [len(positions), dim] (cos half, sin half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = positions.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class AlphaMerge(nn.Module):
    """α = sigmoid(mix_factor); merge(spatial, temporal) = α·spatial + (1−α)·temporal."""

    def __init__(self, mix_factor_init: float) -> None:
        super().__init__()
        self.mix_factor = nn.Parameter(torch.tensor(float(mix_factor_init)))

    @property
    def alpha(self) -> Tensor:
        return torch.sigmoid(self.mix_factor)

    def merge_residual(self, spatial: Tensor, residual: Tensor) -> Tensor:
        """The merge when temporal = spatial + residual: α·s + (1−α)(s + r) = s + (1−α)·r."""
        return torch.addcmul(spatial, (1 - self.alpha).to(residual.dtype), residual)  # one pass

    def forward(self, spatial: Tensor, temporal: Tensor) -> Tensor:
        a = self.alpha.to(spatial.dtype)
        return a * spatial + (1 - a) * temporal


class TemporalAttention(nn.Module):
    """Self-attention across the frames of each video at every pixel (Video LDM), α-merged.

    tokens [B·F, H·W, C] (a channels-last view of GN(x)) + sinusoidal frame embedding → one
    Linear(C, 3C) whose q, k, v chunks go to ops.temporal_attention as strided views (no copies)
    → zero-initialised output projection.
    """

    def __init__(
        self, channels: int, head_dim: int, num_groups: int, window: int, mix_factor_init: float
    ) -> None:
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"TemporalAttention: channels {channels} % head_dim {head_dim} != 0")
        self.channels, self.num_heads = channels, channels // head_dim
        self.norm = nn.GroupNorm(num_groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj_out = zero_(nn.Linear(channels, channels))
        self.merge = AlphaMerge(mix_factor_init)
        self.register_buffer(
            "frame_pos", sinusoidal_embedding(torch.arange(window), channels), persistent=False
        )
        self.ops_mode = "auto"

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        bf, c, h, w = x.shape
        b = bf // num_frames
        if num_frames > self.frame_pos.shape[0]:
            raise ValueError(
                f"{num_frames} frames exceed the model window {self.frame_pos.shape[0]}"
            )
        n = self.norm
        y = _ops(self.ops_mode, x, n.weight).group_norm(dense(x), n.num_groups, n.weight, n.bias, n.eps)
        tok = y.permute(0, 2, 3, 1).reshape(b, num_frames, h * w, c)  # a view when channels-last
        tok = (tok + self.frame_pos[:num_frames, None, :].to(tok.dtype)).reshape(bf, h * w, c)
        q, k, v = self.qkv(tok).chunk(3, dim=-1)  # strided views of one [B·F, S, 3C] tensor
        o = _ops(self.ops_mode, q).temporal_attention(q, k, v, num_frames, self.num_heads)
        o = self.proj_out(o).reshape(bf, h, w, c).permute(0, 3, 1, 2)
        return self.merge.merge_residual(x, o)


class TemporalConvBlock(nn.Module):
    """Residual block of two (3,1,1) 3-D convolutions over the frame axis (Video LDM), α-merged."""

    def __init__(self, channels: int, num_groups: int, mix_factor_init: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, channels)
        self.conv1 = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        self.norm2 = nn.GroupNorm(num_groups, channels)
        self.conv2 = zero_(nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))
        self.merge = AlphaMerge(mix_factor_init)
        self.ops_mode = "auto"

    def _norm_silu(self, norm: nn.GroupNorm, x: Tensor, num_frames: int) -> Tensor:
        """SiLU(GN(x)) with statistics over each video's frames, on [B·F, C, H, W] in place."""
        ops = _ops(self.ops_mode, x, norm.weight)
        return ops.group_norm(dense(x), norm.num_groups, norm.weight, norm.bias, norm.eps, silu=True,
                              frames=num_frames)

    @staticmethod
    def _conv(conv: nn.Conv3d, x: Tensor, num_frames: int) -> Tensor:
        """The (3,1,1) Conv3d as a (3,1) Conv2d over frames-as-height: oneDNN runs 2-D convs
        (PyTorch's CPU Conv3d of this shape falls back to a slow im2col path)."""
        _, _, h, w = x.shape
        y = F.conv2d(frames_as_height(x, num_frames), conv.weight.squeeze(-1), conv.bias,
                     padding=(1, 0))
        y = height_as_frames(y, h, w)
        return y.contiguous() if x.is_contiguous() else y  # keep x's layout

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        r = self._conv(self.conv1, self._norm_silu(self.norm1, x, num_frames), num_frames)
        r = self._conv(self.conv2, self._norm_silu(self.norm2, r, num_frames), num_frames)
        return self.merge.merge_residual(x, r)


__all__ = [
    "OPS_MODES",
    "AlphaMerge",
    "Downsample",
    "PosGN",
    "PosGNTables",
    "ResBlock",
    "TemporalAttention",
    "TemporalConvBlock",
    "Upsample",
    "dense",
    "frames_as_height",
    "height_as_frames",
    "set_ops",
    "sinusoidal_embedding",
]

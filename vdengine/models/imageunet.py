"""ImageUNet: a small pixel-space image denoiser built from vdengine's layers, for the families.

The seed families need image-shaped networks beside the VideoUNet: VIDM's content generator
(frame 0) and motion generator (frame n), VideoFusion's base generator (the middle frame). They
all are this UNet: PosGN ResBlocks (vdengine.models.layers) at every level, with the noise step t
(and, for VIDM's motion generator, the frame index n) reaching every block through PosGN's
coordinate tables (t, n, h, w): PosGN is the timestep embedding here, as in VIDM's motion
generator. Features are [N, C, H, W] with N independent images (or one frame of N videos).

``UNetConfig`` holds the sizes; ``RowTables`` are PosGN tables whose rows carry their own (t, n)
pair (one row per distinct pair: a sampling step shares one row over the whole batch and both
guidance halves); ``row_coords`` finds those rows. With ``reference_channels`` > 0 the UNet has
VIDM's adaptive feature residual: an encoder of a clean reference image (frame 0) runs beside the
input blocks, ``r_k = E_k(r_{k−1}); h_k = r_k + residual_scale · U_k(h_{k−1})``, so every skip
connection carries the reference's features.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vdengine.models.layers import (
    Downsample,
    PosGNTables,
    ResBlock,
    Upsample,
    linspace_coord,
    set_ops,
    zero_,
)


@dataclass
class UNetConfig:
    """Sizes of an ImageUNet. Level l works at (image_size / patch_size) / 2**l with
    ``base_channels · channel_mult[l]`` channels; ``patch_size`` p folds p×p pixels into channels
    before the first conv (pixel_unshuffle) and unfolds after the last."""

    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    num_groups: int = 8
    class_embed_dim: int = 32
    patch_size: int = 2

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if not self.channel_mult:
            raise ValueError("UNetConfig: channel_mult must not be empty")
        if self.patch_size not in (1, 2, 4):
            raise ValueError(f"UNetConfig: patch_size must be 1, 2 or 4, got {self.patch_size}")
        if self.num_res_blocks < 1 or self.base_channels < 1 or self.class_embed_dim < 1:
            raise ValueError("UNetConfig: num_res_blocks, base_channels and class_embed_dim must "
                             "be >= 1")
        for m in self.channel_mult:
            if (self.base_channels * m) % self.num_groups:
                raise ValueError(f"UNetConfig: channels {self.base_channels * m} not divisible "
                                 f"by num_groups {self.num_groups}")

    @property
    def divisor(self) -> int:
        """H and W must be multiples of this."""
        return self.patch_size * 2 ** (len(self.channel_mult) - 1)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"UNetConfig: unknown field(s) {unknown}")
        return cls(**d)


class RowTables(PosGNTables):
    """PosGN tables whose P rows each have their own timestep and frame coordinate.

    Row p holds (t_rows[p], n_coord[p]); image row i of a forward uses table row i % P. P = 1 when
    every row shares (t, n) (a sampling step: one table row for all videos and guidance halves).
    """

    def __init__(self, t_rows: Tensor, n_coord: Tensor, num_train_timesteps: int) -> None:
        super().__init__(t_rows, 1, 1, num_train_timesteps)  # [P] timesteps, one "frame" each
        if n_coord.shape != t_rows.shape:
            raise ValueError(f"n_coord must be [P] like t_rows {tuple(t_rows.shape)}, got "
                             f"{tuple(n_coord.shape)}")
        self.n_coord = n_coord.to(t_rows.device, torch.float32)

    def grid(self, h: int, w: int) -> Tensor:
        """Coordinates [P, h, w, 4] as (t, n, h, w), every one in [−1, 1] (n may be clamped)."""
        key = (h, w)
        if key not in self._grids:
            p, dev = self.t_coord.shape[0], self.t_coord.device
            g = torch.empty(p, h, w, 4, device=dev)
            g[..., 0] = self.t_coord[:, None, None]
            g[..., 1] = self.n_coord[:, None, None]
            g[..., 2] = linspace_coord(h, dev, torch.float32)[None, :, None]
            g[..., 3] = linspace_coord(w, dev, torch.float32)[None, None, :]
            self._grids[key] = g
        return self._grids[key]


def _as_rows(value: Tensor | float, batch: int, name: str) -> Tensor:
    """A scalar / [1] / [batch] value as a flat tensor of 1 or batch elements."""
    v = torch.as_tensor(value).reshape(-1)
    if v.numel() not in (1, batch):
        raise ValueError(f"{name} must be a scalar, [1] or [B={batch}] tensor, got "
                         f"{tuple(torch.as_tensor(value).shape)}")
    return v


def row_coords(t: Tensor | float, n: Tensor | float, batch: int, device
               ) -> tuple[Tensor, Tensor]:
    """The distinct (t, n) rows of a batch in period order: ([P] t, [P] n), row b using b % P.

    t: the timesteps (scalar, [1] or [batch]); n: frame positions (the same shapes; a CPU tensor
    or a Python number is read without a device sync). P = 1 when both are shared; else the
    smallest P dividing batch with (t, n)[b] == (t, n)[b % P] (guidance halves repeat the rows).
    """
    tv, nv = _as_rows(t, batch, "t"), _as_rows(n, batch, "frame position")
    if tv.numel() == 1 and nv.numel() == 1:
        return tv.to(device, torch.float32), nv.to(device, torch.float32)
    tv = tv.expand(batch) if tv.numel() == 1 else tv
    nv = nv.expand(batch) if nv.numel() == 1 else nv
    key = torch.stack([tv.detach().float().cpu(), nv.detach().float().cpu()], dim=1)  # [B, 2]
    period = batch
    for p in range(1, batch + 1):
        if batch % p == 0 and torch.equal(key, key[:p].repeat(batch // p, 1)):
            period = p
            break
    return (tv[:period].to(device, torch.float32), nv[:period].to(device, torch.float32))


class ImageUNet(nn.Module):
    """Image denoiser body: [N, in_channels, H, W] → [N, out_channels, H, W].

    Args:
        config: the sizes (UNetConfig).
        in_channels: input channels (x_t plus whatever is concatenated to it).
        out_channels: output channels.
        num_classes: class labels 0..num_classes−1 plus a null class (index num_classes) for
            classifier-free guidance; 0 = unconditional.
        reference_channels: channels of a clean reference image for VIDM's adaptive feature
            residual (0 = none).
        residual_scale: weight of the UNet's own input blocks against the reference features.
    """

    def __init__(self, config: UNetConfig, in_channels: int, out_channels: int,
                 num_classes: int = 0, reference_channels: int = 0,
                 residual_scale: float = 0.2) -> None:
        super().__init__()
        self.config = cfg = config
        self.num_classes = num_classes
        self.out_channels = out_channels
        self.residual_scale = residual_scale
        chans = [cfg.base_channels * m for m in cfg.channel_mult]
        p2 = cfg.patch_size**2
        class_dim = cfg.class_embed_dim if num_classes > 0 else 0
        self.class_embed = nn.Embedding(num_classes + 1, class_dim) if num_classes > 0 else None

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, cfg.num_groups, class_dim, project_input=True)

        self.conv_in = nn.Conv2d(in_channels * p2, chans[0], 3, padding=1)
        # Input blocks: a flat list of ResBlocks and Downsamples, so the reference encoder can
        # mirror it one to one.
        self.down = nn.ModuleList()
        skip_ch, ch = [chans[0]], chans[0]
        for lv, c in enumerate(chans):
            for _ in range(cfg.num_res_blocks):
                self.down.append(res(ch, c))
                ch = c
                skip_ch.append(ch)
            if lv < len(chans) - 1:
                self.down.append(Downsample(ch))
                skip_ch.append(ch)
        self.reference = None
        if reference_channels > 0:
            enc = nn.ModuleList([nn.Conv2d(reference_channels * p2, chans[0], 3, padding=1)])
            ch_r = chans[0]
            for blk in self.down:
                if isinstance(blk, ResBlock):
                    cout = blk.conv1.out_channels
                    enc.append(res(ch_r, cout))
                    ch_r = cout
                else:
                    enc.append(Downsample(ch_r))
            self.reference = enc
        self.mid = nn.ModuleList([res(ch, ch), res(ch, ch)])
        self.up = nn.ModuleList()
        for lv in reversed(range(len(chans))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(res(ch + skip_ch.pop(), chans[lv]))
                ch = chans[lv]
            if lv > 0:
                self.up.append(Upsample(ch))
        self.norm_out = nn.GroupNorm(cfg.num_groups, ch)
        self.conv_out = zero_(nn.Conv2d(ch, out_channels * p2, 3, padding=1))

    def set_ops(self, mode: str) -> ImageUNet:
        """"fused" (C++ kernels, inference), "reference" (pure PyTorch, autograd) or "auto"."""
        return set_ops(self, mode)

    def class_embedding(self, label: Tensor | None, batch: int, device) -> Tensor | None:
        """SiLU(embedding) [batch, D] of the labels (None → the null class), or None without
        classes. A label given to an unconditional network is a ValueError."""
        if self.class_embed is None:
            if label is not None:
                raise ValueError("this network is unconditional (num_classes = 0): pass "
                                 "label=None")
            return None
        if label is None:
            label = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        label = torch.as_tensor(label, device=device).long().reshape(-1)
        if label.numel() == 1 and batch > 1:
            label = label.expand(batch)
        if label.numel() != batch:
            raise ValueError(f"label must be [B={batch}], got {tuple(label.shape)}")
        return F.silu(self.class_embed(label))

    def forward(
        self,
        x: Tensor,  # [N, in_channels, H, W]
        tables: PosGNTables,  # P rows, N % P == 0
        emb: Tensor | None = None,  # [N, class_embed_dim] (class_embedding) or None
        reference: Tensor | None = None,  # [N, reference_channels, H, W] clean reference image
    ) -> Tensor:  # [N, out_channels, H, W]
        p = self.config.patch_size
        if (self.reference is None) != (reference is None):
            raise ValueError("reference= is required by a UNet with a reference encoder and "
                             "refused by one without")
        h = self.conv_in(F.pixel_unshuffle(x, p) if p > 1 else x)
        r = None
        if reference is not None:
            r = self.reference[0](F.pixel_unshuffle(reference, p) if p > 1 else reference)
            h = r + self.residual_scale * h
        skips = [h]
        for i, blk in enumerate(self.down):
            h = blk(h, tables, emb) if isinstance(blk, ResBlock) else blk(h)
            if r is not None:
                enc = self.reference[i + 1]
                r = enc(r, tables, emb) if isinstance(enc, ResBlock) else enc(r)
                h = r + self.residual_scale * h
            skips.append(h)
        for blk in self.mid:
            h = blk(h, tables, emb)
        for blk in self.up:
            if isinstance(blk, ResBlock):
                h = blk(torch.cat([h, skips.pop()], dim=1), tables, emb)
            else:
                h = blk(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, p) if p > 1 else out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["ImageUNet", "RowTables", "UNetConfig", "count_parameters", "row_coords"]

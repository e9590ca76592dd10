"""VideoUNet: a pixel-space video denoiser with PosGN ResBlocks (VIDM) and α-merged temporal
layers and context-frame conditioning (Video LDM).

Frames are a batch for the spatial layers: features are [B·F, C, H, W] throughout; temporal layers
unflatten the batch to mix frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vdengine.models.config import ModelConfig
from vdengine.models.layers import (
    AlphaMerge,
    Downsample,
    PosGNTables,
    ResBlock,
    TemporalAttention,
    TemporalConvBlock,
    Upsample,
    _ops,
    dense,
    set_ops,
    zero_,
)
from vdengine.models.table_cache import TableCache


class Block(nn.Module):
    """ResBlock → [temporal conv block] → [temporal attention]."""

    def __init__(self, cin: int, cout: int, cfg: ModelConfig, tconv: bool, attn: bool) -> None:
        super().__init__()
        class_dim = cfg.class_embed_dim if cfg.num_classes > 0 else 0
        self.res = ResBlock(cin, cout, cfg.num_groups, class_dim, cfg.project_inputs)
        self.tconv = TemporalConvBlock(cout, cfg.num_groups, cfg.mix_factor_init) if tconv else None
        self.tattn = (
            TemporalAttention(cout, cfg.head_dim, cfg.num_groups, cfg.window, cfg.mix_factor_init)
            if attn
            else None
        )

    def forward(self, x: Tensor, tables: PosGNTables, emb: Tensor | None, frames: int) -> Tensor:
        x = self.res(x, tables, emb)
        if self.tconv is not None:
            x = self.tconv(x, frames)
        if self.tattn is not None:
            x = self.tattn(x, frames)
        return x


class VideoUNet(nn.Module):
    """Video denoiser. See ``forward`` for the call signature."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = cfg = config
        chans = [cfg.base_channels * m for m in cfg.channel_mult]
        levels = len(chans)
        p2 = cfg.patch_size**2
        self.conv_in = nn.Conv2d(cfg.in_channels * p2, chans[0], 3, padding=1)
        self.class_embed = (
            nn.Embedding(cfg.num_classes + 1, cfg.class_embed_dim) if cfg.num_classes > 0 else None
        )

        self.down = nn.ModuleList()
        skip_ch = [chans[0]]
        ch = chans[0]
        for lv in range(levels):
            stage = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                stage.append(
                    Block(
                        ch,
                        chans[lv],
                        cfg,
                        lv in cfg.temporal_conv_levels,
                        lv in cfg.attention_levels,
                    )
                )
                ch = chans[lv]
                skip_ch.append(ch)
            down = Downsample(ch) if lv < levels - 1 else None
            if down is not None:
                skip_ch.append(ch)
            self.down.append(nn.ModuleDict({"blocks": stage, **({"down": down} if down else {})}))

        self.mid = nn.ModuleList([Block(ch, ch, cfg, True, True), Block(ch, ch, cfg, False, False)])

        self.up = nn.ModuleList()
        for lv in reversed(range(levels)):
            stage = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                stage.append(
                    Block(
                        ch + skip_ch.pop(),
                        chans[lv],
                        cfg,
                        lv in cfg.temporal_conv_levels,
                        lv in cfg.attention_levels,
                    )
                )
                ch = chans[lv]
            up = Upsample(ch) if lv > 0 else None
            self.up.append(nn.ModuleDict({"blocks": stage, **({"up": up} if up else {})}))

        self.norm_out = nn.GroupNorm(cfg.num_groups, ch)
        self.conv_out = zero_(nn.Conv2d(ch, cfg.channels * p2, 3, padding=1))
        self.ops_mode = "auto"
        self.channels_last = False  # activations' memory format: see set_channels_last
        # PosGN tables by timestep across calls, at inference on CPU timesteps (table_cache.py)
        self.table_cache = TableCache()
        self.last_tables: PosGNTables | None = None  # the tables of the latest forward (tests)

    # ------------------------------------------------------------------------ utilities
    def set_ops(self, mode: str) -> VideoUNet:
        """Run on "fused" ops (vdengine.ops, inference), "reference" (pure PyTorch, autograd) or
        "auto" (reference while autograd records, fused otherwise). Returns self."""
        return set_ops(self, mode)

    def set_channels_last(self, enabled: bool = True) -> VideoUNet:
        """Run on channels-last (NHWC) activations: oneDNN's preferred convolution layout, read
        directly by the fused PosGN / group-norm kernels, and the token layout of temporal
        attention, so no layer converts back and forth. Conv2d weights are stored NHWC too.
        Outputs are the same up to float rounding. Returns self."""
        self.channels_last = bool(enabled)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data = m.weight.data.contiguous(memory_format=fmt)
        return self

    @property
    def spec(self):
        """The engine's view of this model (vdengine.Denoiser protocol)."""
        if getattr(self, "_spec_for", None) is not self.config:
            self._spec, self._spec_for = self.config.denoiser_spec(), self.config
        return self._spec

    def alpha_merges(self) -> list[AlphaMerge]:
        return [m for m in self.modules() if isinstance(m, AlphaMerge)]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @staticmethod
    def timestep_rows(t: Tensor | float, batch: int, device) -> Tensor:
        """The distinct timesteps in period order: [P] with video b using row b % P.

        P = 1 when t is a scalar / [1] / all equal; else the smallest P dividing B with
        t[b] == t[b % P] (e.g. [uncond; cond] halves with per-video t give P = B/2)."""
        t = torch.as_tensor(t, dtype=torch.float32, device=device).reshape(-1)
        if t.numel() == 1:
            return t
        if t.numel() != batch:
            raise ValueError(f"t must be a scalar, [1] or [B={batch}] tensor, got {tuple(t.shape)}")
        tc = t.detach().cpu()
        for p in range(1, batch + 1):
            if batch % p == 0 and torch.equal(tc, tc[:p].repeat(batch // p)):
                return t[:p]
        return t  # unreachable: p = batch always matches

    def make_tables(self, t: Tensor | float, batch: int, frames: int, device) -> PosGNTables:
        cfg = self.config
        rows = self.timestep_rows(t, batch, device)

        def make() -> PosGNTables:
            return PosGNTables(rows, frames, cfg.window, cfg.num_train_timesteps,
                               self.channels_last)

        # cached only where reading t's values costs no device sync, and never while training
        if (self.training or torch.is_grad_enabled() or rows.device.type != "cpu"
                or torch.compiler.is_compiling()):  # a compiled graph computes its tables
            return make()
        key = (frames, self.channels_last)
        return self.table_cache.get_or_make(self, rows, key, make)

    # --------------------------------------------------------------------------- forward
    def forward(
        self,
        x: Tensor,  # [B, F, C, H, W] noisy frames x_t
        t: Tensor
        | float,  # [B] (or scalar/[1]: shared) float timesteps in [0, num_train_timesteps)
        label: Tensor | None = None,  # [B] long; None → the null class when num_classes > 0
        context: Tensor | None = None,  # [B, F, C, H, W] clean known frames (any value elsewhere)
        context_mask: Tensor | None = None,  # [B, F], 1 = frame known
    ) -> Tensor:  # [B, F, C, H, W] in config.prediction_type, in x's dtype
        cfg = self.config
        if x.dim() != 5 or x.shape[2] != cfg.channels:
            raise ValueError(f"x must be [B, F, {cfg.channels}, H, W], got {tuple(x.shape)}")
        b, f, c, h, w = x.shape
        if f > cfg.window:
            raise ValueError(f"x has {f} frames, more than the model window {cfg.window}")
        div = cfg.patch_size * 2 ** (len(cfg.channel_mult) - 1)
        if h % div or w % div:
            raise ValueError(f"H, W must be divisible by {div}, got {h}×{w}")

        # computed in the model's own dtype (e.g. bfloat16 weights in a float32 sampling loop)
        out_dtype, dtype = x.dtype, self.conv_in.weight.dtype
        x = x.to(dtype)
        inp = x
        if cfg.context:
            if context is None:
                m = x.new_zeros(b, f)
                known = x.new_zeros(x.shape)
            else:
                if context_mask is None:
                    raise ValueError("context_mask [B, F] is required when context is given")
                if context.shape != x.shape or tuple(context_mask.shape) != (b, f):
                    raise ValueError(
                        f"context must be {tuple(x.shape)} and context_mask {(b, f)}, got "
                        f"{tuple(context.shape)} and {tuple(context_mask.shape)}"
                    )
                m = context_mask.to(x.dtype)
                known = context.to(dtype) * m[:, :, None, None, None]
            mask_ch = m[:, :, None, None, None].expand(b, f, 1, h, w)
            inp = torch.cat([x, known, mask_ch], dim=2)
        elif context is not None or context_mask is not None:
            raise ValueError("this model has no context conditioning (config.context is False)")

        emb = None
        if self.class_embed is not None:
            if label is None:
                label = torch.full((b,), cfg.num_classes, dtype=torch.long, device=x.device)
            label = torch.as_tensor(label, device=x.device).long().reshape(-1)
            if label.numel() == 1 and b > 1:
                label = label.expand(b)
            if label.numel() != b:
                raise ValueError(f"label must be [B={b}], got {tuple(label.shape)}")
            emb = F.silu(self.class_embed(label))
        elif label is not None:
            raise ValueError("this model is unconditional (num_classes = 0): pass label=None")

        tables = self.make_tables(t, b, f, x.device)
        self.last_tables = tables

        hcur = inp.reshape(b * f, inp.shape[2], h, w)
        if cfg.patch_size > 1:
            hcur = F.pixel_unshuffle(hcur, cfg.patch_size)
        if self.channels_last:
            hcur = hcur.contiguous(memory_format=torch.channels_last)
        hcur = self.conv_in(hcur)
        skips = [hcur]
        for stage in self.down:
            for blk in stage["blocks"]:
                hcur = blk(hcur, tables, emb, f)
                skips.append(hcur)
            if "down" in stage:
                hcur = stage["down"](hcur)
                skips.append(hcur)
        for blk in self.mid:
            hcur = blk(hcur, tables, emb, f)
        for stage in self.up:
            for blk in stage["blocks"]:
                hcur = blk(torch.cat([hcur, skips.pop()], dim=1), tables, emb, f)
            if "up" in stage:
                hcur = stage["up"](hcur)
        n = self.norm_out
        ops = _ops(self.ops_mode, hcur, n.weight)
        hcur = ops.group_norm(dense(hcur), n.num_groups, n.weight, n.bias, n.eps, silu=True)
        out = self.conv_out(hcur)
        if not torch.compiler.is_compiling():
            self.table_cache.admit()  # the tables of a cache miss are filled now
        if cfg.patch_size > 1:
            out = F.pixel_shuffle(out, cfg.patch_size)
        return out.reshape(b, f, c, h, w).to(out_dtype)


__all__ = ["Block", "VideoUNet"]

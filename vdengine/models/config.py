"""ModelConfig: everything needed to rebuild a VideoUNet, round-trips through JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from vdengine.ops.temporal_attention import HEAD_DIMS
from vdengine.schedules import KINDS as SCHEDULES
from vdengine.schedules import PREDICTION_TYPES as _ALL_PREDICTION_TYPES

#: What a VideoUNet may be trained to predict: the targets the training recipe
#: (vdengine.balls.train) computes. "sample" (x0) has no target there yet.
TRAINABLE_PREDICTION_TYPES = tuple(p for p in _ALL_PREDICTION_TYPES if p != "sample")


@dataclass
class ModelConfig:
    """Hyper-parameters of a VideoUNet (a pixel-space video denoiser).

    Levels: level l works at image_size / (patch_size·2**l) with base_channels * channel_mult[l] channels.
    Temporal layers (Video LDM): a (3,1,1) conv block after every spatial ResBlock at the levels in
    ``temporal_conv_levels`` and a temporal self-attention at ``attention_levels``; the middle block
    always has both. ``num_heads`` of an attention layer = channels // head_dim.
    ``patch_size`` p > 1: the input is space-to-depth folded (pixel_unshuffle) to
    image_size/p before the first conv and unfolded (pixel_shuffle) after the last, so level 0
    works at image_size/p — a 4× (p = 2) cheaper model for small CPU budgets.
    ``project_inputs``: a ResBlock whose channels change (decoder blocks fed the concatenated skip)
    first maps its input with a 1×1 conv, so its PosGN tables are computed at the output width.
    ``num_classes`` = 0 means unconditional; otherwise labels are 0..num_classes-1 and index
    num_classes is the null class used for classifier-free guidance.
    ``mix_factor_init``: α = sigmoid(mix_factor) merges spatial and temporal paths
    (α·spatial + (1−α)·temporal). Stability's 0.5 (α ≈ 0.62) protects a pretrained image model
    when temporal layers are inserted; here everything trains from scratch and motion is the whole
    task, so the default 0.0 (α = 0.5) gives the temporal branches a larger share of the gradient
    while staying in the sigmoid's linear range (their zero-initialised outputs already make a
    fresh temporal layer an identity).
    """

    name: str = "balls32"
    image_size: int = 32
    channels: int = 3
    window: int = 16
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (1, 2)
    temporal_conv_levels: tuple[int, ...] = (0, 1, 2)
    head_dim: int = 32
    num_groups: int = 8
    num_classes: int = 4
    context: bool = True
    prediction_type: str = "v_prediction"
    schedule: str = "cosine"
    num_train_timesteps: int = 1000
    mix_factor_init: float = 0.0
    class_embed_dim: int = 64
    patch_size: int = 2
    project_inputs: bool = True
    extra: dict = field(default_factory=dict)  # free-form notes, ignored by the model

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attention_levels = tuple(int(a) for a in self.attention_levels)
        self.temporal_conv_levels = tuple(int(a) for a in self.temporal_conv_levels)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"ModelConfig: {msg}")

        if self.prediction_type not in TRAINABLE_PREDICTION_TYPES:
            bad(f"prediction_type must be one of {TRAINABLE_PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.schedule not in SCHEDULES:
            bad(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.channel_mult:
            bad("channel_mult must not be empty")
        levels = len(self.channel_mult)
        if self.patch_size not in (1, 2, 4):
            bad(f"patch_size must be 1, 2 or 4, got {self.patch_size}")
        if self.image_size % (self.patch_size * 2 ** (levels - 1)) != 0:
            bad(f"image_size {self.image_size} not divisible by {self.patch_size}·2**{levels - 1}")
        for lv in (*self.attention_levels, *self.temporal_conv_levels):
            if not 0 <= lv < levels:
                bad(f"temporal level {lv} out of range for {levels} levels")
        if self.head_dim not in HEAD_DIMS:
            bad(f"head_dim must be one of {HEAD_DIMS}, got {self.head_dim}")
        chans = {self.base_channels * m for m in self.channel_mult}
        for c in chans:
            if c % self.num_groups != 0:
                bad(f"channels {c} not divisible by num_groups {self.num_groups}")
        for lv in set(self.attention_levels) | {levels - 1}:
            c = self.base_channels * self.channel_mult[lv]
            if c % self.head_dim != 0:
                bad(
                    f"attention channels {c} (level {lv}) not divisible by head_dim {self.head_dim}"
                )
        if self.num_classes < 0 or self.window < 1 or self.num_res_blocks < 1:
            bad("num_classes >= 0, window >= 1 and num_res_blocks >= 1 required")
        if self.num_train_timesteps < 2:
            bad("num_train_timesteps must be >= 2")

    # ------------------------------------------------------------ derived sizes
    @property
    def in_channels(self) -> int:
        """Input channels of the first conv: x_t (+ mask·context and mask with context)."""
        return 2 * self.channels + 1 if self.context else self.channels

    @property
    def null_class(self) -> int | None:
        return self.num_classes if self.num_classes > 0 else None

    def denoiser_spec(self):
        """The engine's view of a model with this config (vdengine.denoiser.DenoiserSpec)."""
        from vdengine.denoiser import DenoiserSpec
        from vdengine.schedules import NoiseSchedule

        null = {"label": self.num_classes} if self.num_classes > 0 else {}
        return DenoiserSpec(
            name=self.name, channels=self.channels, sample_size=(self.image_size,) * 2,
            window=self.window, prediction_type=self.prediction_type,
            schedule=NoiseSchedule(kind=self.schedule,
                                   num_train_timesteps=self.num_train_timesteps),
            conditioning=("label",) if self.num_classes > 0 else (), null_conditioning=null,
            context=self.context, num_classes=self.num_classes)

    # ------------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("channel_mult", "attention_levels", "temporal_conv_levels"):
            d[k] = list(d[k])
        return d

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown field(s) {unknown}")
        return cls(**d)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> ModelConfig:
        p = Path(text_or_path) if not str(text_or_path).lstrip().startswith("{") else None
        text = p.read_text() if p is not None else str(text_or_path)
        return cls.from_dict(json.loads(text))


def default_config() -> ModelConfig:
    """The config of vdengine's default model (bouncing balls, 16 frames at 32×32)."""
    return ModelConfig()


def tiny_config(**overrides) -> ModelConfig:
    """A very small config for tests (fast on CPU)."""
    base = {
        "name": "tiny",
        "image_size": 16,
        "window": 4,
        "base_channels": 16,
        "channel_mult": (1, 2),
        "num_res_blocks": 1,
        "attention_levels": (1,),
        "temporal_conv_levels": (0, 1),
        "head_dim": 16,
        "num_groups": 4,
        "num_classes": 4,
        "class_embed_dim": 16,
    }
    base.update(overrides)
    return ModelConfig(**base)

"""What the configs of the seed families (VIDM, VideoFusion) share: the "family" key, the data
shape, the class labels, the noise schedule, and a JSON round trip with nested UNetConfigs.

A family's config.json carries ``"family": "vidm"`` (or "videofusion"): that key is how a model
directory says which model type it holds (vdengine.models.families.family_of); VideoUNet
directories have none.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from vdengine.models.imageunet import UNetConfig
from vdengine.schedules import KINDS as SCHEDULES
from vdengine.schedules import NoiseSchedule


@dataclass
class FamilyConfig:
    """Fields every family has. Subclasses set ``FAMILY`` and add their own fields."""

    FAMILY: ClassVar[str] = ""

    name: str = ""
    image_size: int = 32
    channels: int = 3
    num_classes: int = 4
    schedule: str = "linear"
    num_train_timesteps: int = 1000
    extra: dict = dataclasses.field(default_factory=dict)  # free-form notes, ignored

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # nested UNet sizes given as dicts (from JSON)
            if f.type in ("UNetConfig", UNetConfig) and isinstance(getattr(self, f.name), dict):
                setattr(self, f.name, UNetConfig.from_dict(getattr(self, f.name)))
        self.validate()

    def bad(self, msg: str) -> None:
        raise ValueError(f"{type(self).__name__}: {msg}")

    def validate(self) -> None:
        if self.schedule not in SCHEDULES:
            self.bad(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.num_train_timesteps < 2:
            self.bad("num_train_timesteps must be >= 2")
        if self.channels < 1 or self.image_size < 1 or self.num_classes < 0:
            self.bad("channels >= 1, image_size >= 1 and num_classes >= 0 required")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, UNetConfig) and self.image_size % value.divisor:
                self.bad(f"image_size {self.image_size} not divisible by {value.divisor} "
                         f"({f.name}: patch_size·2**(levels−1))")

    def noise_schedule(self) -> NoiseSchedule:
        return NoiseSchedule(kind=self.schedule, num_train_timesteps=self.num_train_timesteps)

    @property
    def null_class(self) -> int | None:
        return self.num_classes if self.num_classes > 0 else None

    # ------------------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"family": self.FAMILY}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = v.to_dict() if isinstance(v, UNetConfig) else (
                list(v) if isinstance(v, tuple) else v)
        return d

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FamilyConfig:
        d = dict(d)
        family = d.pop("family", None)
        if family != cls.FAMILY:
            raise ValueError(f"{cls.__name__}: config family must be {cls.FAMILY!r}, got "
                             f"{family!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}")
        return cls(**d)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> FamilyConfig:
        p = Path(text_or_path) if not str(text_or_path).lstrip().startswith("{") else None
        return cls.from_dict(json.loads(p.read_text() if p is not None else str(text_or_path)))


__all__ = ["FamilyConfig"]

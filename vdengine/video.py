"""`Video`: the result of generation -- a batch of uint8 RGB clips plus their frame rate."""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vdengine._validate import check_frames, check_real

if TYPE_CHECKING:
    import torch

__all__ = ["Video"]


@dataclass(eq=False, repr=False)
class Video:
    """A batch of videos.

    Attributes:
        frames: uint8 numpy array [B, F, H, W, 3] (RGB, channels last). A single video
            [F, H, W, 3] is accepted and stored with B = 1.
        fps: frames per second (> 0), used when saving.

    ``len(video)`` is the number of frames F (the length of each video); `batch_size` is B.
    """

    frames: np.ndarray
    fps: float = 8.0

    def __post_init__(self) -> None:
        self.frames = check_frames(self.frames)
        self.fps = check_real("fps", self.fps, positive=True)

    # -- shape -----------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """B, the number of videos."""
        return self.frames.shape[0]

    @property
    def num_frames(self) -> int:
        """F, the number of frames of each video."""
        return self.frames.shape[1]

    @property
    def height(self) -> int:
        return self.frames.shape[2]

    @property
    def width(self) -> int:
        return self.frames.shape[3]

    @property
    def duration(self) -> float:
        """Length of each video in seconds."""
        return self.num_frames / self.fps

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (
            f"Video(batch_size={self.batch_size}, num_frames={self.num_frames}, "
            f"height={self.height}, width={self.width}, fps={self.fps:g})"
        )

    def __getitem__(self, index: int | slice) -> Video:
        """Select videos of the batch: ``video[0]`` is a Video with batch_size 1."""
        if isinstance(index, numbers.Integral):
            if not -self.batch_size <= index < self.batch_size:
                raise IndexError(f"index {index} out of range for batch_size {self.batch_size}")
            index = slice(index, index + 1 if index != -1 else None)
        if not isinstance(index, slice):
            raise TypeError(f"index: expected an int or a slice, got {type(index).__name__}")
        return Video(self.frames[index], fps=self.fps)

    # -- conversion -------------------------------------------------------------------------
    @classmethod
    def from_tensor(cls, x: torch.Tensor, fps: float = 8.0) -> Video:
        """Convert model output to uint8 frames.

        Args:
            x: float tensor in [-1, 1], [B, F, 3, H, W] (or [F, 3, H, W]), any device.
            fps: frames per second.

        Values map by ``(x + 1) * 127.5``, rounded and clamped to [0, 255]; the conversion runs
        on x's device and only the uint8 result is copied to the host.
        """
        import torch

        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"x: expected a floating-point tensor in [-1, 1], got {x.dtype}")
        if x.ndim == 4:
            x = x.unsqueeze(0)
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"x: expected shape [B, F, 3, H, W], got {tuple(x.shape)}")
        x = x.detach()
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(f"x: contains {bad} NaN/inf values out of {x.numel()}")
        u8 = ((x.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
        frames = u8.permute(0, 1, 3, 4, 2).contiguous().cpu().numpy()
        return cls(frames, fps=fps)

    def to_tensor(
        self, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """The inverse of `from_tensor`: float [B, F, 3, H, W] in [-1, 1] (float32 by default)."""
        import torch

        dtype = torch.float32 if dtype is None else dtype
        x = torch.from_numpy(self.frames).to(device).permute(0, 1, 4, 2, 3)
        return (x.to(dtype) / 127.5 - 1.0).contiguous()

    # -- output -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, upscale: int = 1, **kwargs: Any) -> Path:
        """Write to .mp4 / .gif / .png (see `vdengine.io`); a batch is tiled into a grid.

        Returns the final path. Extra keyword arguments (crf, preset) go to `VideoWriter`.
        """
        from vdengine.io import save_video

        return save_video(self.frames, path, fps=self.fps, upscale=upscale, **kwargs)

"""Procedural "bouncing balls" clips: the training data of vdengine's default model.

Black background, 1–3 filled discs (no anti-aliasing), each a distinct colour of ``PALETTE``,
moving at constant velocity with elastic reflection at the walls. Balls may overlap each other;
later-drawn balls are on top. The class label of a clip is its number of balls.

Geometry (in pixel-index units, pixel (row i, column j) has its centre at (x=j, y=i)):
- radius r ~ U[3, 6]·s and speed ~ U[0.5, 2.5]·s px/frame with s = size / 32, direction uniform;
- a pixel is inside a disc when (j − cx)² + (i − cy)² ≤ r²;
- centres stay in [r, size − 1 − r] on both axes: a ball bounces when its edge reaches the border
  pixel's centre. Reflection is exact (the trajectory is folded analytically, so a bounce between
  two frames lands where it would in continuous time).

Everything is vectorised numpy; a seed (or np.random.Generator) fixes every draw.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: The fixed ball colours (RGB, uint8). Another module (metrics) imports this.
PALETTE: np.ndarray = np.array(
    [
        (255, 0, 0),  # red
        (0, 255, 0),  # green
        (0, 0, 255),  # blue
        (255, 255, 0),  # yellow
        (0, 255, 255),  # cyan
        (255, 0, 255),  # magenta
    ],
    dtype=np.uint8,
)
PALETTE.setflags(write=False)
PALETTE_NAMES = ("red", "green", "blue", "yellow", "cyan", "magenta")

MAX_BALLS = 3
MIN_BALLS = 1
RADIUS_RANGE = (3.0, 6.0)  # px at 32×32, scaled by size / 32
SPEED_RANGE = (0.5, 2.5)  # px/frame at 32×32, scaled by size / 32


def _rng(generator: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    return np.random.default_rng(generator)


def _fold(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Reflect an unbounded 1-D trajectory into [lo, hi] (elastic bounces at both walls)."""
    span = hi - lo
    u = np.mod(p - lo, 2 * span)
    return lo + np.where(u <= span, u, 2 * span - u)


def sample_params(n: int, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw the per-clip ball parameters. Arrays are [n, MAX_BALLS, ...]; unused slots are masked."""
    s = size / 32.0
    num = rng.integers(MIN_BALLS, MAX_BALLS + 1, size=n)
    # Distinct colours per clip: the first MAX_BALLS of a random permutation of the palette.
    colors = np.argsort(rng.random((n, len(PALETTE))), axis=1)[:, :MAX_BALLS]
    radius = rng.uniform(*RADIUS_RANGE, size=(n, MAX_BALLS)) * s
    lo, hi = radius, (size - 1) - radius  # [n, K]
    start = rng.uniform(0.0, 1.0, size=(n, MAX_BALLS, 2)) * (hi - lo)[..., None] + lo[..., None]
    speed = rng.uniform(*SPEED_RANGE, size=(n, MAX_BALLS)) * s
    angle = rng.uniform(0.0, 2 * np.pi, size=(n, MAX_BALLS))
    velocity = np.stack([speed * np.cos(angle), speed * np.sin(angle)], axis=-1)  # (vx, vy)
    present = np.arange(MAX_BALLS)[None, :] < num[:, None]
    return {
        "num_balls": num.astype(np.int64),
        "colors": colors.astype(np.int64),
        "radius": radius,
        "start_xy": start,
        "velocity_xy": velocity,
        "present": present,
    }


def trajectories(params: dict[str, np.ndarray], num_frames: int, size: int) -> np.ndarray:
    """Ball centres [n, F, MAX_BALLS, 2] as (x, y) after wall reflections (NaN for absent balls)."""
    t = np.arange(num_frames, dtype=np.float64)[None, :, None, None]
    raw = params["start_xy"][:, None] + params["velocity_xy"][:, None] * t  # [n, F, K, 2]
    r = params["radius"][:, None, :, None]
    pos = _fold(raw, r, (size - 1) - r)
    return np.where(params["present"][:, None, :, None], pos, np.nan)


def render(params: dict[str, np.ndarray], centers: np.ndarray, size: int) -> np.ndarray:
    """Draw the discs: uint8 frames [n, F, size, size, 3], ball k drawn over balls < k."""
    n, f = centers.shape[:2]
    frames = np.zeros((n, f, size, size, 3), dtype=np.uint8)
    coord = np.arange(size, dtype=np.float64)
    for k in range(MAX_BALLS):
        cx = centers[:, :, k, 0][..., None, None]  # [n, F, 1, 1]
        cy = centers[:, :, k, 1][..., None, None]
        r2 = (params["radius"][:, k] ** 2)[:, None, None, None]
        inside = (coord[None, None, None, :] - cx) ** 2 + (
            coord[None, None, :, None] - cy
        ) ** 2 <= r2
        inside &= params["present"][:, k][:, None, None, None]  # NaN compares False anyway
        color = PALETTE[params["colors"][:, k]][:, None, None, None, :]  # [n, 1, 1, 1, 3]
        frames = np.where(inside[..., None], color, frames)
    return frames


def generate_clips(
    n: int,
    num_frames: int = 16,
    size: int = 32,
    generator: np.random.Generator | int | None = None,
    return_info: bool = False,
):
    """Generate n bouncing-balls clips.

    Args:
        n: number of clips.
        num_frames: frames per clip (F).
        size: frame height = width (32 by default, 64 works: radius/speed scale with size/32).
        generator: a np.random.Generator or an int seed (None = fresh entropy).
        return_info: also return the ground truth (see Returns).

    Returns:
        frames: uint8 [n, F, size, size, 3] (RGB, channels last).
        labels: int64 [n], the number of balls (1..3).
        info (only with return_info): dict of numpy arrays — ``centers_xy`` [n, F, 3, 2] (x, y)
        ball centres per frame (NaN for absent slots), ``radius`` [n, 3], ``colors`` [n, 3]
        (palette indices), ``velocity_xy`` [n, 3, 2], ``present`` [n, 3] bool, ``num_balls`` [n].
        Slot k is drawn after slot k − 1.
    """
    if n < 0 or num_frames < 1 or size < 16:
        raise ValueError(f"need n >= 0, num_frames >= 1, size >= 16; got {n}, {num_frames}, {size}")
    rng = _rng(generator)
    params = sample_params(n, size, rng)
    centers = trajectories(params, num_frames, size)
    frames = render(params, centers, size)
    labels = params["num_balls"].copy()
    if not return_info:
        return frames, labels
    info = {k: params[k] for k in ("radius", "colors", "velocity_xy", "present", "num_balls")}
    info["centers_xy"] = centers
    return frames, labels, info


def to_model_range(frames: np.ndarray):
    """uint8 [n, F, H, W, 3] → float32 torch tensor [n, F, 3, H, W] in [−1, 1]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 1, 4, 2, 3)
    return x.float().div_(127.5).sub_(1.0).contiguous()


def from_model_range(x) -> np.ndarray:
    """Float tensor [n, F, 3, H, W] in [−1, 1] → uint8 numpy [n, F, H, W, 3]."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(dtype=__import__("torch").uint8)
    return x.permute(0, 1, 3, 4, 2).cpu().numpy()


def batch_iterator(
    batch_size: int,
    num_frames: int = 16,
    size: int = 32,
    generator: np.random.Generator | int | None = None,
) -> Iterator[tuple]:
    """Infinite iterator of training batches: (x float32 [B, F, 3, H, W] in [−1, 1], labels int64 [B]).

    Pass a np.random.Generator to be able to checkpoint its ``bit_generator.state`` and resume the
    exact data stream.
    """
    import torch

    rng = _rng(generator)
    while True:
        frames, labels = generate_clips(batch_size, num_frames, size, rng)
        yield to_model_range(frames), torch.from_numpy(labels)


__all__ = [
    "MAX_BALLS",
    "PALETTE",
    "PALETTE_NAMES",
    "RADIUS_RANGE",
    "SPEED_RANGE",
    "batch_iterator",
    "from_model_range",
    "generate_clips",
    "to_model_range",
]

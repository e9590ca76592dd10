"""Quality measurements for bouncing-balls videos (real clips or generated ones).

The data (see `vdengine.balls.data`): black background, 1-3 filled discs of radius
3-6 px at 32x32, each a distinct colour of `PALETTE`, moving at constant velocity with elastic
reflection at the walls; balls pass over each other (the later-drawn one hides the other).

Pipeline, all vectorised over [B, F]:

1. **Pixel classes** (`classify_pixels`). A pixel is foreground when its brightest channel is at
   least ``min_value`` (128: half coverage of a blurred edge). Its colour is the nearest corner
   of the RGB cube after dividing by that brightest channel, i.e. each channel is "on" when it is
   above half the brightest one. Red/green/blue/yellow/cyan/magenta map to the palette; white
   (all three on: grey, washed-out or over-exposed pixels) is "other". Dividing by brightness
   makes dim, blurred or noisy pixels keep their hue; the threshold keeps dark haze background.
2. **Blobs** (`ball_stats`). Per frame and palette colour: 8-connected components; the largest
   one is the ball (area, centroid); components of at least ``min_area`` px are counted; a ball
   "touches" another when its blob is 8-adjacent to another colour's blob (occlusion context).
3. **Per video** (`evaluate`). A *ball* is a colour present (largest blob >= ``min_area``) in
   more than half of the frames.

   - *Permanence*: there is at least one ball, and in every frame every ball is present with
     an area within ±50% of its reference area (the median over frames where it touches no
     other blob, else its largest area) -- unless it is occluded: present, touching another
     blob and not too large (hiding only shrinks a ball), or missing while hidden.
     *Hidden*: between frames where the ball was seen at its size, its footprint (a disc of
     its radius at the interpolated position, searched within 1 px per frame of distance to
     the nearest such frame, at most 5 px) is at least 60% covered by other colours; before
     the first / after the last such frame, its extrapolated position is within reach
     (r_top - r_hidden + 1.5 px + 2.5 px per frame) of a larger ball. Balls pass over each
     other often (40 of 64 real clips), so without this rule real data would fail.
   - *Count consistency*: the number of objects (components >= ``min_area`` px of each palette
     colour; a ball that touches another or is hidden counts once) is the same in every frame.
     A colour seen in a minority of frames counts once in every frame if it is hidden in all
     the others (a ball under another most of the time); otherwise it is an object that pops
     in and out, except where it touches another blob (a seam of blended colours where balls
     meet, or a fringe: see purity). Catches balls that split, duplicate, appear or vanish.
   - *Smoothness*: mean |second difference| of a ball's centroid (px/frame²) over triples of
     consecutive frames where the ball is clean (present, right size, not touching another) and
     not within r + 1.5 px of a wall. The balls move at constant velocity, so the ceiling is the
     centroid's pixel-quantisation noise. Near walls: a bounce between frames f and f+1 puts one
     of them within r + v/2 <= r + 1.25 px of the wall, so the r + 1.5 margin removes both
     triples a bounce disturbs. Velocity sign flips away from walls are *not* excused: they are
     what jitter looks like. NaN when a video has no such triple (not measurable).
   - *Speed*: mean |first difference| of clean centroids (px/frame). Not a quality score: it
     tells a frozen video (smoothness 0, speed 0) from a good one.
   - *Purity*: fraction of foreground pixels in the balls' (largest) blobs: 1 = no stray
     specks, no seams or halos of other hues, no white. Slightly below 1 on real clips where
     a ball on top cuts one below it in two.
   - *Background*: mean brightness (max channel / 255) of background pixels (0 = clean black).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from vdengine.balls.data import PALETTE as _PALETTE
from vdengine.balls.data import PALETTE_NAMES as _PALETTE_NAMES

PALETTE: np.ndarray = np.asarray(_PALETTE, dtype=np.uint8)
PALETTE_NAMES: tuple[str, ...] = tuple(_PALETTE_NAMES)
K = len(PALETTE)
#: Class index of bright but unsaturated (white/grey) pixels; 0 is background, 1..K the palette.
OTHER = K + 1

#: Permanence tolerance: a ball's area must stay within this factor band of its median area.
AREA_BAND = (0.5, 1.5)
#: Wall margin for smoothness, in px beyond the ball radius (see the module docstring).
WALL_MARGIN = 1.5
#: A missing ball is hidden when this fraction of its expected footprint shows other colours.
HIDDEN_COVERAGE = 0.6
#: Search radius for a hidden ball's footprint, px per frame from the nearest frame it was seen.
SEARCH_PX = 1.0
#: ... and at most this far.
SEARCH_MAX_PX = 5.0
#: Extrapolated occlusion tolerance, in px beyond r_top - r_hidden.
OCCLUSION_MARGIN = 1.5
#: Largest speed of the dataset at 32x32, px/frame (scaled by size / 32); used to widen the
#: occlusion tolerance when a missing ball's position has to be extrapolated.
MAX_SPEED_32 = 2.5

__all__ = [
    "OTHER",
    "PALETTE",
    "PALETTE_NAMES",
    "ball_stats",
    "classify_pixels",
    "evaluate",
    "format_table",
    "summary_row",
]


def _check_frames(frames: Any) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames: expected a numpy uint8 array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames: expected dtype uint8, got {frames.dtype}")
    if frames.ndim == 4:
        frames = frames[None]
    if frames.ndim != 5 or frames.shape[-1] != 3 or min(frames.shape) == 0:
        raise ValueError(
            f"frames: expected shape [B, F, H, W, 3] (or [F, H, W, 3]), got {tuple(frames.shape)}"
        )
    return frames


def _pattern_table() -> np.ndarray:
    """Class for each on/off channel pattern r*4 + g*2 + b (0 = no channel on: background)."""
    table = np.full(8, OTHER, dtype=np.uint8)
    table[0] = 0
    for i, colour in enumerate(PALETTE):
        bits = (colour > 127).astype(int)
        table[bits[0] * 4 + bits[1] * 2 + bits[2]] = i + 1
    return table


_TABLE = _pattern_table()


def classify_pixels(frames: np.ndarray, min_value: int = 128) -> np.ndarray:
    """Per-pixel class: 0 background, 1..K palette colour (PALETTE[c - 1]), OTHER white/grey.

    frames: uint8 [..., H, W, 3] -> uint8 [..., H, W]
    """
    rgb = frames.astype(np.int16)
    value = rgb.max(axis=-1)
    on = 2 * rgb > value[..., None]  # channel above half the brightest one
    pattern = on[..., 0] * 4 + on[..., 1] * 2 + on[..., 2]
    cls = _TABLE[pattern]
    cls[value < min_value] = 0
    return cls


_SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _shifted(a: np.ndarray, dy: int, dx: int, fill: int = 0) -> np.ndarray:
    """out[..., y, x] = a[..., y + dy, x + dx] (fill outside)."""
    out = np.full_like(a, fill)
    h, w = a.shape[-2:]
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[..., yd, xd] = a[..., ys, xs]
    return out


def _label(cls: np.ndarray) -> np.ndarray:
    """8-connected components of equal nonzero class, per image. cls: [N, H, W] -> int labels.

    Each component is labelled by the largest flat index (+1) of its pixels (0 = background),
    found by max-propagation over the 8 neighbours plus pointer jumping (a pixel takes the label
    of the pixel its label names); only images still changing are iterated.
    """
    n, h, w = cls.shape
    dtype = np.int32 if n * h * w < 2**31 - 1 else np.int64
    lab = np.where(cls > 0, np.arange(1, n * h * w + 1, dtype=dtype).reshape(n, h, w), 0)
    padded = np.pad(cls, ((0, 0), (1, 1), (1, 1)))
    same = np.stack(
        [(padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] == cls) & (cls > 0)
         for dy, dx in _SHIFTS]
    )  # fmt: skip
    flat = lab.reshape(-1)
    active = np.flatnonzero((cls > 0).reshape(n, -1).any(axis=1))
    while active.size:
        cur = lab[active]
        p = np.pad(cur, ((0, 0), (1, 1), (1, 1)))
        sm = same[:, active]
        new = cur.copy()
        for j, (dy, dx) in enumerate(_SHIFTS):
            nb = p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            np.maximum(new, np.where(sm[j], nb, 0), out=new)
        lab[active] = new
        for _ in range(2):  # pointer jumping; labels only grow, so this stays a max
            fg = new > 0
            new[fg] = flat[new[fg] - 1]
            lab[active] = new
        changed = (new != cur).reshape(active.size, -1).any(axis=1)
        active = active[changed]
    return lab


def ball_stats(
    frames: np.ndarray, min_value: int = 128, min_area: int = 4
) -> dict[str, np.ndarray]:
    """Per frame and palette colour blob statistics.

    Args:
        frames: uint8 [B, F, H, W, 3] (or [F, H, W, 3]).
        min_value: brightness threshold of `classify_pixels`.
        min_area: smallest component (px) that counts as an object.

    Returns a dict of numpy arrays (K = len(PALETTE), colour k is PALETTE[k]):
        ``classes`` uint8 [B, F, H, W]; ``area`` int [B, F, K], the largest component's area;
        ``centroid`` float [B, F, K, 2] (x, y) of the largest component, NaN when its area is
        below ``min_area``; ``num_blobs`` int [B, F, K], components >= min_area px;
        ``touching`` bool [B, F, K], the largest blob is 8-adjacent to another colour's largest
        blob; ``extra_blobs`` int [B, F, K], components >= min_area other than the largest that
        touch no other colour's component >= min_area (duplicates, not occlusion pieces);
        ``fg_pixels`` int [B, F], non-background pixels; ``background_level`` float [B, F],
        mean max channel / 255 over background pixels (0 if there are none).
    """
    frames = _check_frames(frames)
    b, f, h, w, _ = frames.shape
    n = b * f
    cls = classify_pixels(frames, min_value).reshape(n, h, w)
    lab = _label(cls)

    flat = lab.ravel()
    sizes = np.bincount(flat, minlength=n * h * w + 1)
    ys, xs = np.indices((h, w))
    sum_x = np.bincount(flat, weights=np.broadcast_to(xs, (n, h, w)).ravel(), minlength=sizes.size)
    sum_y = np.bincount(flat, weights=np.broadcast_to(ys, (n, h, w)).ravel(), minlength=sizes.size)

    comp = np.flatnonzero(sizes)
    comp = comp[comp > 0]
    comp_img = (comp - 1) // (h * w)
    comp_cls = cls.ravel()[comp - 1].astype(np.int64)
    keep = comp_cls <= K  # palette colours only
    comp, comp_img, comp_cls = comp[keep], comp_img[keep], comp_cls[keep] - 1
    comp_size = sizes[comp]

    area = np.zeros((n, K), np.int64)
    best = np.zeros((n, K), np.int64)  # label of the largest component
    order = np.argsort(comp_size, kind="stable")  # ascending: the largest is written last
    area[comp_img[order], comp_cls[order]] = comp_size[order]
    best[comp_img[order], comp_cls[order]] = comp[order]
    num_blobs = np.zeros((n, K), np.int64)
    counted = comp_size >= min_area
    np.add.at(num_blobs, (comp_img[counted], comp_cls[counted]), 1)

    present = area >= min_area
    centroid = np.full((n, K, 2), np.nan)
    lbl = best[present]
    centroid[present] = np.stack([sum_x[lbl], sum_y[lbl]], axis=-1) / sizes[lbl][:, None]

    # Map of largest blobs (colour index + 1, 0 elsewhere), then 8-adjacency between colours.
    is_best = np.zeros(sizes.size, bool)
    is_best[best[present]] = True
    blobmap = np.where(is_best[lab], cls, 0).astype(np.int16)
    touch = np.zeros((n, h, w), bool)
    for dy, dx in _SHIFTS:
        nb = _shifted(blobmap, dy, dx)
        touch |= (nb > 0) & (nb != blobmap)
    touch &= blobmap > 0
    touching = np.zeros((n, K + 1), bool)
    img_idx = np.broadcast_to(np.arange(n)[:, None, None], (n, h, w))
    touching[img_idx[touch], blobmap[touch]] = True

    # Components >= min_area that are not their colour's largest and touch no other colour's
    # component >= min_area: duplicates of a ball, not pieces of a partly hidden one.
    big = np.zeros(sizes.size, bool)
    big[1:] = sizes[1:] >= min_area
    bigmap = np.where(big[lab], cls, 0).astype(np.int16)
    touch_big = np.zeros((n, h, w), bool)
    for dy, dx in _SHIFTS:
        nb = _shifted(bigmap, dy, dx)
        touch_big |= (nb > 0) & (nb != bigmap)
    comp_touches = np.zeros(sizes.size, bool)
    comp_touches[lab[touch_big & (bigmap > 0)]] = True
    extra = big[comp] & ~comp_touches[comp] & ~is_best[comp]
    extra_blobs = np.zeros((n, K), np.int64)
    np.add.at(extra_blobs, (comp_img[extra], comp_cls[extra]), 1)

    fg = cls > 0
    value = frames.reshape(n, h, w, 3).max(axis=-1).astype(np.float64)
    bg_count = (~fg).sum(axis=(1, 2))
    bg_sum = np.where(fg, 0.0, value).sum(axis=(1, 2))
    background_level = np.where(bg_count > 0, bg_sum / np.maximum(bg_count, 1) / 255.0, 0.0)

    return {
        "classes": cls.reshape(b, f, h, w),
        "area": area.reshape(b, f, K),
        "centroid": centroid.reshape(b, f, K, 2),
        "num_blobs": num_blobs.reshape(b, f, K),
        "touching": touching[:, 1:].reshape(b, f, K),
        "extra_blobs": extra_blobs.reshape(b, f, K),
        "fg_pixels": fg.sum(axis=(1, 2)).reshape(b, f),
        "background_level": background_level.reshape(b, f),
    }


def _interp_positions(centroid: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill a ball's positions [F, 2] from frames `known`; also the distance (frames) to the
    nearest known frame outside the known span (0 inside it, where positions are interpolated)."""
    f = centroid.shape[0]
    t = np.arange(f)
    kt = np.flatnonzero(known)
    pos = np.stack([np.interp(t, kt, centroid[kt, i]) for i in range(2)], axis=-1)
    gap = np.maximum(kt[0] - t, 0) + np.maximum(t - kt[-1], 0)
    return pos, gap


def _evaluate_one(s: dict[str, np.ndarray], i: int, height: int, width: int) -> dict[str, Any]:
    area, cen = s["area"][i], s["centroid"][i]  # [F, K], [F, K, 2]
    touching, extra = s["touching"][i], s["extra_blobs"][i]
    f = area.shape[0]
    present = ~np.isnan(cen[..., 0])
    seen = present.sum(axis=0)
    balls = np.flatnonzero(seen * 2 > f)
    # Colours seen in a minority of frames (but at least two): balls hidden under others most of
    # the time, or transient artefacts; they are tested for occlusion only for the counts.
    minority = np.flatnonzero((seen >= 2) & (seen * 2 <= f))
    extrapolation_speed = MAX_SPEED_32 * min(height, width) / 32.0

    # Reference area: the median over frames where the ball is seen whole (touching no other
    # blob); if it always touches another, the largest area seen (hiding only shrinks a ball).
    med, radius = {}, {}
    for k in balls:
        whole = present[:, k] & ~touching[:, k]
        med[k] = float(np.median(area[whole, k]) if whole.any() else area[:, k].max())
        radius[k] = math.sqrt(med[k] / math.pi)
    for k in minority:
        radius[k] = math.sqrt(area[:, k].max() / math.pi)

    classes = s["classes"][i]  # [F, H, W]
    ys, xs = np.indices((height, width))

    def hidden(k: int, t: int, known: np.ndarray) -> bool:
        """Is colour k, missing in frame t, plausibly under other blobs there?

        Its expected position is interpolated between the nearest frames where it was seen
        (`known`). Between two such frames, its footprint (a disc of its radius) must be mostly
        covered by other colours at some position within `SEARCH_PX` px per frame of distance
        to the nearest known frame (interpolation error: bounces, biased centroids of partly
        hidden balls). Beyond the first/last known frame the position is extrapolated: it
        must only lie within reach (radius + max speed x frames) of a larger ball.
        """
        pos, gap = _interp_positions(cen[:, k], known)
        if gap[t] == 0:
            dist = np.abs(np.flatnonzero(known) - t).min()
            reach = min(SEARCH_PX * dist, SEARCH_MAX_PX)
            steps = np.arange(-math.floor(reach), math.floor(reach) + 1)
            r2 = radius[k] ** 2
            for dy in steps:
                for dx in steps:
                    if dx * dx + dy * dy > reach * reach:
                        continue
                    disc = (xs - pos[t, 0] - dx) ** 2 + (ys - pos[t, 1] - dy) ** 2 <= r2
                    covered = classes[t][disc]
                    if (
                        covered.size
                        and np.mean((covered > 0) & (covered != k + 1)) >= HIDDEN_COVERAGE
                    ):
                        return True
            return False
        tol = OCCLUSION_MARGIN + gap[t] * extrapolation_speed
        for d in np.flatnonzero(present[t]):
            r_d = radius.get(d, math.sqrt(area[t, d] / math.pi))
            if d != k and np.hypot(*(pos[t] - cen[t, d])) < max(r_d - radius[k], 0.0) + tol:
                return True
        return False

    permanent = len(balls) > 0
    # Objects per frame: one per colour whose largest blob is there (or hidden), plus duplicates.
    counts = extra.sum(axis=1).astype(np.int64)
    accel: list[float] = []
    speeds: list[float] = []
    for k in balls:
        lo, hi = AREA_BAND[0] * med[k], AREA_BAND[1] * med[k]
        ok = present[:, k] & (area[:, k] >= lo) & (area[:, k] <= hi)
        clean = ok & ~touching[:, k]
        known = ok if ok.any() else present[:, k]
        there = present[:, k].copy()
        for t in np.flatnonzero(~ok):
            if present[t, k]:
                # partly hidden by another ball (hiding only shrinks it), or resized on its own
                permanent &= bool(touching[t, k] and area[t, k] <= hi)
            else:
                there[t] = hidden(k, t, known)
                permanent &= bool(there[t])
        counts += there

        x, y = cen[:, k, 0], cen[:, k, 1]
        margin = radius[k] + WALL_MARGIN
        near_wall = (x <= margin) | (x >= width - 1 - margin) | (y <= margin)
        near_wall |= y >= height - 1 - margin
        good = clean & ~near_wall
        triple = good[:-2] & good[1:-1] & good[2:]
        if triple.any():
            a = cen[2:, k] - 2 * cen[1:-1, k] + cen[:-2, k]
            accel.extend(np.hypot(a[triple, 0], a[triple, 1]).tolist())
        pair = clean[:-1] & clean[1:]
        if pair.any():
            v = cen[1:, k] - cen[:-1, k]
            speeds.extend(np.hypot(v[pair, 0], v[pair, 1]).tolist())

    ball_colours = list(balls)
    for k in np.setdiff1d(np.flatnonzero(seen), balls):
        if k in minority and all(
            hidden(k, t, present[:, k]) for t in np.flatnonzero(~present[:, k])
        ):
            counts += 1  # a ball hidden most of the time: one object throughout
            ball_colours.append(k)
        else:  # a blob stuck to another one is a seam or fringe (see purity), not an object
            counts += present[:, k] & ~touching[:, k]

    fg = s["fg_pixels"][i].sum()
    pure = area[:, ball_colours][present[:, ball_colours]].sum()
    return {
        "num_balls": len(balls),
        "permanence": bool(permanent),
        "counts": counts,
        "count_consistent": bool((counts == counts[0]).all()),
        "smoothness": float(np.mean(accel)) if accel else math.nan,
        "speed": float(np.mean(speeds)) if speeds else math.nan,
        "purity": float(pure / fg) if fg else math.nan,
        "background": float(s["background_level"][i].mean()),
    }


def evaluate(
    frames: np.ndarray, min_value: int = 128, min_area: int = 4, chunk: int | None = None
) -> dict[str, Any]:
    """Measure a batch of bouncing-balls videos (see the module docstring for the definitions).

    Args:
        frames: uint8 [B, F, H, W, 3] (or one video [F, H, W, 3]).
        min_value, min_area: see `ball_stats`.
        chunk: videos processed at once (bounds memory; default: about 2**20 pixels).

    Returns a dict with aggregates (Python floats)
        ``num_videos``; ``permanence_rate`` (fraction of videos with permanence);
        ``count_consistency_rate``; ``smoothness`` (mean over videos with measurable motion,
        px/frame², NaN if none); ``measurable_rate`` (fraction of videos with measurable
        motion); ``speed`` (mean px/frame); ``mean_balls``; ``purity``; ``background``
    and ``per_video``: a dict of numpy arrays ``num_balls`` int [B], ``permanence`` bool [B],
    ``count_consistent`` bool [B], ``counts`` int [B, F], ``smoothness`` float [B] (NaN =
    not measurable), ``speed`` [B], ``purity`` [B], ``background`` [B].
    """
    frames = _check_frames(frames)
    b, f, h, w, _ = frames.shape
    if chunk is None:
        chunk = max(1, 2**20 // (f * h * w))
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk: expected an int >= 1, got {chunk!r}")
    rows = []
    for start in range(0, b, chunk):
        s = ball_stats(frames[start : start + chunk], min_value=min_value, min_area=min_area)
        rows.extend(_evaluate_one(s, i, h, w) for i in range(s["area"].shape[0]))
    per_video = {
        key: np.array([r[key] for r in rows])
        for key in ("num_balls", "permanence", "count_consistent", "counts", "smoothness",
                    "speed", "purity", "background")
    }  # fmt: skip

    def nanmean(x: np.ndarray) -> float:
        x = x[~np.isnan(x)]
        return float(x.mean()) if x.size else math.nan

    return {
        "num_videos": b,
        "permanence_rate": float(per_video["permanence"].mean()),
        "count_consistency_rate": float(per_video["count_consistent"].mean()),
        "smoothness": nanmean(per_video["smoothness"]),
        "measurable_rate": float((~np.isnan(per_video["smoothness"])).mean()),
        "speed": nanmean(per_video["speed"]),
        "mean_balls": float(per_video["num_balls"].mean()),
        "purity": nanmean(per_video["purity"]),
        "background": float(per_video["background"].mean()),
        "per_video": per_video,
    }


def summary_row(name: str, result: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """One table row (column -> value) from an `evaluate` result; `extra` columns go last."""
    row = {
        "videos": name,
        "n": result["num_videos"],
        "permanence": f"{100 * result['permanence_rate']:.1f}%",
        "count consistency": f"{100 * result['count_consistency_rate']:.1f}%",
        "smoothness (px/frame²)": result["smoothness"],
        "measurable": f"{100 * result['measurable_rate']:.0f}%",
        "speed (px/frame)": result["speed"],
        "balls": result["mean_balls"],
        "purity": f"{100 * result['purity']:.1f}%" if not math.isnan(result["purity"]) else "n/a",
        "background": result["background"],
    }
    row.update(extra)
    return row


def _cell(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value).replace("|", "\\|")


def format_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A markdown table from rows (dicts column -> value); columns default to the keys of all
    rows in first-seen order. Floats print with 3 decimals, NaN and missing cells as n/a."""
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    if not columns:
        raise ValueError("rows: expected at least one row with at least one column")
    cells = [[_cell(row.get(c, math.nan)) for c in columns] for row in rows]
    widths = [max([len(str(c))] + [len(r[j]) for r in cells]) for j, c in enumerate(columns)]
    numeric = [
        all(r[j].rstrip("%").replace(".", "", 1).lstrip("-").isdigit() or r[j] == "n/a"
            for r in cells) and bool(cells)
        for j in range(len(columns))
    ]  # fmt: skip

    def line(values: Sequence[str]) -> str:
        padded = [
            v.rjust(wd) if num else v.ljust(wd) for v, wd, num in zip(values, widths, numeric)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (wd + 1) + ":" if num else "-" * (wd + 2)
                          for wd, num in zip(widths, numeric)) + "|"  # fmt: skip
    return "\n".join([line([str(c) for c in columns]), rule, *map(line, cells)])

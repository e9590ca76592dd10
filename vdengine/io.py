"""Streamed video writing: mp4 (H.264), gif and png frame grids.

`VideoWriter` accepts frames incrementally so a long video can be encoded window by window and
each window released::

    with VideoWriter("out.mp4", fps=8, upscale=4) as w:
        for window in windows:          # uint8 [F, H, W, 3] or [B, F, H, W, 3]
            w.write(window)

Formats (chosen by the extension, case-insensitive):

- ``.mp4``: H.264 (libx264, ``yuv420p``, BT.709 tags, ``+faststart``) through the ffmpeg binary
  shipped by imageio-ffmpeg, fed through a pipe: frames are encoded as they arrive and only one
  write's worth is held in memory. yuv420p needs even dimensions, so odd widths/heights are
  padded with one black column/row (never resized).
- ``.gif``: Pillow through imageio, looping forever. GIF cannot be appended to, so frames are
  buffered (at their original size, before upscaling) and encoded on close. Frame delays are in
  10 ms units; they are distributed so the average matches ``fps`` (8 fps -> 120/130 ms
  alternating). Pillow merges identical consecutive frames into one longer frame.
- ``.png``: one grid image, rows = videos, columns = frames. Buffered until close (a single
  image cannot be streamed); limited to `MAX_PNG_SIDE` pixels per side.

A batch ``[B, F, H, W, 3]`` is tiled into a near-square grid per frame for mp4/gif
(``ceil(sqrt(B))`` columns), with a `SEPARATOR_PX` gray separator.

Output is written to a hidden temporary file in the destination directory (same extension,
e.g. ``.out.mp4.tmp-1a2b3c4d.mp4``) and renamed onto the final name with `os.replace` when the
writer closes successfully. On any error -- inside the ``with`` block, during encoding, on a bad
argument -- the temporary file is removed, nothing is created under the final name and a file
already there is left untouched.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import secrets
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vdengine._validate import check_frames, check_int, check_real

__all__ = [
    "MAX_PNG_SIDE",
    "SEPARATOR_PX",
    "SUPPORTED_EXTENSIONS",
    "VideoWriter",
    "grid_shape",
    "save_video",
    "tile_batch",
    "upscale_frames",
]

SUPPORTED_EXTENSIONS = (".mp4", ".gif", ".png")
#: Largest width or height of a png grid, in pixels (after upscaling).
MAX_PNG_SIDE = 32768
#: Separator between tiles of a batch grid, in output pixels (after upscaling).
SEPARATOR_PX = 2
#: Separator colour: mid gray, visible against the black backgrounds of most clips.
SEPARATOR_RGB = (96, 96, 96)
#: RGB -> BT.709 limited-range yuv420p, tagged so players do not guess the colour space.
_VF = (
    "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
    "setparams=range=tv:color_primaries=bt709:color_trc=bt709:colorspace=bt709"
)
#: Shortest GIF frame delay in ms; browsers show shorter delays as 100 ms.
_GIF_MIN_DELAY_MS = 20


def _one_line(text: str) -> str:
    return " ".join(text.split())


def check_output_path(path: Any) -> Path:
    """Validate an output video path (extension, directory exists and is writable); return it."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected str or os.PathLike, got {type(path).__name__}")
    p = Path(path).expanduser()
    if str(p) in ("", "."):
        raise ValueError("path: expected a file name, got an empty path")
    ext = p.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise ValueError(
            f"path: unsupported extension {p.suffix or '(none)'!r} in {str(p)!r}; "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if p.is_dir():
        raise ValueError(f"path: {str(p)!r} is a directory, expected a file name")
    parent = p.parent
    if not parent.is_dir():
        raise ValueError(f"path: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"path: directory {str(parent)!r} is not writable")
    return p


def upscale_frames(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour integer upscale of the two axes before the channel axis.

    frames: uint8 [..., H, W, 3] -> [..., H*factor, W*factor, 3]
    """
    if factor == 1:
        return frames
    return np.repeat(np.repeat(frames, factor, axis=-3), factor, axis=-2)


def grid_shape(batch_size: int) -> tuple[int, int]:
    """(rows, cols) of the near-square grid used for a batch: cols = ceil(sqrt(B))."""
    cols = math.ceil(math.sqrt(batch_size))
    rows = math.ceil(batch_size / cols)
    return rows, cols


def tile_batch(frames: np.ndarray, sep: int = SEPARATOR_PX) -> np.ndarray:
    """Tile a batch into one grid per frame.

    frames: uint8 [B, F, H, W, 3] -> [F, rows*H + (rows-1)*sep, cols*W + (cols-1)*sep, 3]
    with (rows, cols) = `grid_shape(B)`. B == 1 returns frames[0] unchanged. Unused cells and
    separators are filled with `SEPARATOR_RGB`.
    """
    b, f, h, w, c = frames.shape
    if b == 1:
        return frames[0]
    rows, cols = grid_shape(b)
    out = np.empty((f, rows * h + (rows - 1) * sep, cols * w + (cols - 1) * sep, c), np.uint8)
    out[...] = np.asarray(SEPARATOR_RGB, np.uint8)
    for i in range(b):
        r, q = divmod(i, cols)
        y, x = r * (h + sep), q * (w + sep)
        out[:, y : y + h, x : x + w] = frames[i]
    return out


def _gif_delays_ms(num_frames: int, fps: float) -> list[int]:
    """Per-frame delays in 10 ms units whose running sum tracks i * 1000 / fps."""
    step = max(1000.0 / fps, _GIF_MIN_DELAY_MS)
    edges = [round(i * step / 10.0) * 10 for i in range(num_frames + 1)]
    return [max(b - a, _GIF_MIN_DELAY_MS) for a, b in itertools.pairwise(edges)]


class VideoWriter:
    """Write a video incrementally; a context manager.

    Args:
        path: destination file; the extension picks the format (.mp4, .gif, .png).
        fps: frames per second (> 0).
        upscale: integer nearest-neighbour upscale factor (>= 1) applied to every frame.
        crf: H.264 constant rate factor, 0 (lossless) .. 51 (worst); mp4 only.
        preset: libx264 speed/size preset (e.g. "ultrafast" .. "veryslow"); mp4 only.

    All arguments are validated here, before anything is written. Frames are given to
    `write` as uint8 [F, H, W, 3] (one video) or [B, F, H, W, 3] (a batch); every write must
    have the same B, H and W. `close` (called by ``__exit__``) finishes the file and renames it
    to `path`; `abort` (called when the ``with`` block raises) discards everything.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = 8,
        upscale: int = 1,
        *,
        crf: int = 18,
        preset: str = "medium",
    ) -> None:
        self.path = check_output_path(path)
        self.fps = check_real("fps", fps, positive=True)
        self.upscale = check_int("upscale", upscale, min=1)
        self.crf = check_int("crf", crf, min=0, max=51)
        if not isinstance(preset, str) or not preset.isidentifier():
            raise ValueError(
                f"preset: expected a libx264 preset name such as 'medium', got {preset!r}"
            )
        self.preset = preset
        self.format = self.path.suffix.lower()[1:]
        self.frames_written = 0
        self._shape: tuple[int, int, int] | None = None  # (B, H, W) fixed by the first write
        self._buffer: list[np.ndarray] = []  # gif/png: [B, F, H, W, 3] chunks as written
        self._tmp: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._stderr: Any = None
        self._closed = False

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> VideoWriter:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:  # a writer dropped without close() leaves nothing behind
        with contextlib.suppress(Exception):
            if not self._closed:
                self.abort()

    # -- public ----------------------------------------------------------------------------
    def write(self, frames: np.ndarray) -> None:
        """Append uint8 frames [F, H, W, 3] or [B, F, H, W, 3]; the first call fixes B, H, W."""
        if self._closed:
            raise ValueError(f"VideoWriter({str(self.path)!r}) is closed; create a new writer")
        frames = check_frames(frames)
        b, f, h, w, _ = frames.shape
        if self._shape is not None and (b, h, w) != self._shape:
            b0, h0, w0 = self._shape
            raise ValueError(
                f"frames: size changed mid-stream: got batch {b} of {h}x{w} (HxW), "
                f"the writer was started with batch {b0} of {h0}x{w0}"
            )
        self._check_png_size(b, self.frames_written + f, h, w)
        self._shape = (b, h, w)
        try:
            if self.format == "mp4":
                self._write_mp4(frames)
            else:  # gif / png: buffered at input resolution, rendered on close
                self._buffer.append(frames.copy())
        except BaseException:
            self.abort()
            raise
        self.frames_written += f

    def close(self) -> Path:
        """Finish encoding and rename the temporary file onto `path`. Returns `path`."""
        if self._closed:
            return self.path
        try:
            if self.frames_written == 0:
                raise ValueError(
                    f"frames: no frames were written to {str(self.path)!r}; nothing saved"
                )
            if self.format == "mp4":
                self._finish_mp4()
            elif self.format == "gif":
                self._finish_gif()
            else:
                self._finish_png()
            os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._buffer = []
        return self.path

    def abort(self) -> None:
        """Discard everything: stop the encoder, remove the temporary file. Idempotent."""
        self._closed = True
        self._buffer = []
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass

    # -- internals ---------------------------------------------------------------------------
    def _check_png_size(self, b: int, total_frames: int, h: int, w: int) -> None:
        if self.format != "png":
            return
        s = self.upscale
        width = total_frames * w * s + (total_frames - 1) * SEPARATOR_PX
        height = b * h * s + (b - 1) * SEPARATOR_PX
        if max(width, height) > MAX_PNG_SIDE:
            raise ValueError(
                f"frames: the png grid would be {width}x{height} px (limit {MAX_PNG_SIDE} per "
                f"side) for {b} videos x {total_frames} frames; write fewer frames, lower "
                "upscale, or use .mp4/.gif for long videos"
            )

    def _new_tmp(self) -> Path:
        """Create (exclusively, honouring the umask) a hidden temp file next to `path`."""
        for _ in range(100):
            tmp = self.path.with_name(
                f".{self.path.name}.tmp-{secrets.token_hex(4)}{self.path.suffix}"
            )
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            os.close(fd)
            self._tmp = tmp
            return tmp
        raise FileExistsError(f"could not create a temporary file next to {str(self.path)!r}")

    def _render(self, frames: np.ndarray) -> np.ndarray:
        """[B, F, H, W, 3] -> upscaled, tiled [F, H', W', 3]; padded to even H', W' for mp4."""
        grid = tile_batch(upscale_frames(frames, self.upscale), sep=SEPARATOR_PX)
        if self.format == "mp4":
            _, h, w, _ = grid.shape
            if h % 2 or w % 2:
                grid = np.pad(grid, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        return np.ascontiguousarray(grid)

    def _write_mp4(self, frames: np.ndarray) -> None:
        grid = self._render(frames)
        if self._proc is None:
            self._start_ffmpeg(width=grid.shape[2], height=grid.shape[1])
        try:
            self._proc.stdin.write(grid.tobytes())
        except OSError as e:  # BrokenPipeError: ffmpeg exited
            self._proc.wait()
            raise RuntimeError(
                f"ffmpeg stopped while encoding {str(self.path)!r}: {self._ffmpeg_log()}"
            ) from e

    def _start_ffmpeg(self, width: int, height: int) -> None:
        import imageio_ffmpeg

        tmp = self._new_tmp()
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-y", "-hide_banner", "-nostdin", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-r", f"{self.fps:.6g}", "-i", "pipe:0",
            "-an",
            "-vf", _VF,
            "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf),
            "-pix_fmt", "yuv420p",
            "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
            "-color_range", "tv",
            "-movflags", "+faststart",
            str(tmp),
        ]  # fmt: skip
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in _finish_mp4/abort)
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr
        )

    def _ffmpeg_log(self) -> str:
        if self._stderr is None:
            return "(no log)"
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace").strip()
        return _one_line(text[-2000:]) or "(no log)"

    def _finish_mp4(self) -> None:
        proc = self._proc
        try:
            proc.stdin.close()
        except OSError:
            pass
        rc = proc.wait()
        self._proc = None
        if rc != 0:
            raise RuntimeError(
                f"ffmpeg failed (exit {rc}) writing {str(self.path)!r}: {self._ffmpeg_log()}"
            )
        self._stderr.close()
        self._stderr = None

    def _finish_gif(self) -> None:
        import imageio.v3 as iio

        grid = self._render(np.concatenate(self._buffer, axis=1))
        self._buffer = []
        delays = _gif_delays_ms(grid.shape[0], self.fps)
        tmp = self._new_tmp()
        iio.imwrite(
            tmp, grid, extension=".gif", plugin="pillow", is_batch=True,
            duration=delays if len(delays) > 1 else delays[0], loop=0,
        )  # fmt: skip

    def _finish_png(self) -> None:
        import imageio.v3 as iio

        frames = upscale_frames(np.concatenate(self._buffer, axis=1), self.upscale)
        self._buffer = []
        b, f, h, w, c = frames.shape  # rows = videos, columns = frames
        sep = SEPARATOR_PX
        grid = np.empty((b * h + (b - 1) * sep, f * w + (f - 1) * sep, c), np.uint8)
        grid[...] = np.asarray(SEPARATOR_RGB, np.uint8)
        for i in range(b):
            for j in range(f):
                y, x = i * (h + sep), j * (w + sep)
                grid[y : y + h, x : x + w] = frames[i, j]
        tmp = self._new_tmp()
        iio.imwrite(tmp, grid, extension=".png", plugin="pillow")


def save_video(
    frames: np.ndarray,
    path: str | os.PathLike,
    fps: float = 8,
    upscale: int = 1,
    **kwargs: Any,
) -> Path:
    """Write a whole video (uint8 [F, H, W, 3] or a batch [B, F, H, W, 3]) to `path`.

    Same formats, validation and atomic rename as `VideoWriter`; extra keyword arguments
    (crf, preset) go to it. Returns the final path.
    """
    frames = check_frames(frames)
    with VideoWriter(path, fps=fps, upscale=upscale, **kwargs) as writer:
        writer.write(frames)
    return writer.path

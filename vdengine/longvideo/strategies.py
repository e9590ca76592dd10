"""Long-video strategies as objects: what the user passes as ``generate(long_video=...)``.

    from vdengine.longvideo import Autoregressive, Keyframes, SharedNoise, Sliding
    pipe.generate(num_frames=256, long_video=Autoregressive(context_frames=2, context_guidance=1.5))
    pipe.generate(num_frames=256, long_video=Sliding(stride=8, noise=SharedNoise(0.5)))
    pipe.generate(num_frames=256, long_video="sliding")      # a name: the defaults

Each strategy is a frozen dataclass holding its own settings only; ``noise=SharedNoise(λ)``
combines VideoFusion's shared base noise with a window strategy (the maths allows it for all of
them), and ``SharedNoise`` alone means independent back-to-back windows whose only link is the
noise. ``resolve(spec)`` checks a strategy against one model and fills in its window; the
sampling itself lives in the strategy's module (autoregressive.py, sliding.py, keyframes.py,
noise.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from vdengine._validate import check_int, check_real
from vdengine.denoiser import DenoiserSpec

BLENDS = ("triangular", "uniform")
#: Windows (sliding) or gaps (keyframes) per forward. 2 keeps the largest forward of a long video
#: the same as at two windows (flat peak memory); raise it for throughput on a GPU.
DEFAULT_WINDOW_BATCH = 2


@dataclass(frozen=True)
class SharedNoise:
    """VideoFusion's decomposed initial noise √λ·b + √(1−λ)·r_i, one base b per video.

    As a strategy on its own: back-to-back windows of ``window`` frames (default: the model's),
    sampled independently. As ``noise=`` of another strategy: that strategy's initial noise.
    """

    lam: float = 0.5
    window: int | None = None

    name: ClassVar[str] = "shared_noise"
    needs_context: ClassVar[bool] = False
    min_window: ClassVar[int] = 1

    def __post_init__(self) -> None:
        lam = check_real("SharedNoise.lam", self.lam)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"SharedNoise.lam (λ) must be in [0, 1], got {lam}")
        object.__setattr__(self, "lam", lam)
        _check_window(self)

    @property
    def noise_lambda(self) -> float:
        return self.lam

    def resolve(self, spec: DenoiserSpec) -> SharedNoise:
        return _resolve_window(self, spec)

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True)
class _Windowed:
    """Settings every window strategy shares: its window and optional shared noise."""

    window: int | None = None
    noise: SharedNoise | None = None

    name: ClassVar[str]
    needs_context: ClassVar[bool] = False
    min_window: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _check_window(self)
        if self.noise is not None and not isinstance(self.noise, SharedNoise):
            raise TypeError(f"{type(self).__name__}.noise must be a SharedNoise or None, "
                            f"got {type(self.noise).__name__}")

    @property
    def noise_lambda(self) -> float | None:
        return None if self.noise is None else self.noise.lam

    @property
    def label(self) -> str:
        """The strategy as the shorthand spells it ("sliding+shared_noise")."""
        return self.name if self.noise is None else f"{self.name}+shared_noise"

    def resolve(self, spec: DenoiserSpec):
        """This strategy checked against one model, with its window filled in."""
        if self.needs_context and not spec.context:
            raise ValueError(
                f"long_video={self.name!r} conditions on known frames, but model "
                f"{spec.name!r} has no context conditioning; use Sliding or SharedNoise")
        resolved = _resolve_window(self, spec)
        resolved._check_against_window(resolved.window)
        return resolved

    def _check_against_window(self, window: int) -> None:
        pass


@dataclass(frozen=True)
class _Contextual(_Windowed):
    context_frames: int = 2
    context_guidance: float = 1.5
    needs_context: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        check_int(f"{name}.context_frames", self.context_frames, min=1)
        s = check_real(f"{name}.context_guidance", self.context_guidance)
        if s < 1:
            raise ValueError(f"{name}.context_guidance must be >= 1 (1 = plain conditioning), "
                             f"got {s}")
        object.__setattr__(self, "context_guidance", s)

    def _check_against_window(self, window: int) -> None:
        if self.context_frames >= window:
            raise ValueError(f"{type(self).__name__}.context_frames must be smaller than the "
                             f"window ({window} frames): each window needs a new frame, got "
                             f"{self.context_frames}")


@dataclass(frozen=True)
class Autoregressive(_Contextual):
    """Windows of L frames, each conditioned on the last ``context_frames`` generated frames,
    with context guidance ``context_guidance`` (Video LDM). Needs a model with context
    conditioning (spec.context)."""

    name: ClassVar[str] = "autoregressive"
    min_window: ClassVar[int] = 2


@dataclass(frozen=True)
class Keyframes(_Contextual):
    """Keyframes every L − 1 frames from an autoregressive pass, then every gap filled with both
    ends known (Video LDM interpolation); ``window_batch`` gaps share a forward."""

    window_batch: int = DEFAULT_WINDOW_BATCH
    name: ClassVar[str] = "keyframes"
    min_window: ClassVar[int] = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("Keyframes.window_batch", self.window_batch, min=1)


@dataclass(frozen=True)
class Sliding(_Windowed):
    """Overlapping windows (``stride`` apart, default window // 2) denoised jointly at every step
    and averaged where they overlap (``blend``: "triangular" or MultiDiffusion's "uniform");
    ``window_batch`` windows share a forward. Needs no context conditioning."""

    stride: int | None = None
    blend: str = "triangular"
    window_batch: int = DEFAULT_WINDOW_BATCH
    name: ClassVar[str] = "sliding"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stride is not None:
            check_int("Sliding.stride", self.stride, min=1)
        if self.blend not in BLENDS:
            raise ValueError(f"Sliding.blend must be one of {BLENDS}, got {self.blend!r}")
        check_int("Sliding.window_batch", self.window_batch, min=1)

    def _check_against_window(self, window: int) -> None:
        if self.stride is None:
            object.__setattr__(self, "stride", max(1, window // 2))
        elif self.stride > window:
            raise ValueError(f"Sliding.stride must be in [1, window={window}] (windows must "
                             f"touch or overlap), got {self.stride}")


Strategy = Autoregressive | Keyframes | Sliding | SharedNoise
STRATEGIES = {cls.name: cls for cls in (Autoregressive, SharedNoise, Sliding, Keyframes)}


def as_strategy(long_video: Any) -> Strategy:
    """A strategy object from generate(long_video=...): an object, or text naming one with
    optional settings, combined with shared noise by "+":

        "sliding"   "sliding(stride=4, blend=uniform)"   "autoregressive+shared_noise(lam=0.3)"

    (the text form is what the CLI's --long-video and job manifests take). A bad name, a bad
    setting or a bad value is a one-line ValueError/TypeError naming it."""
    if isinstance(long_video, (Autoregressive, Keyframes, Sliding, SharedNoise)):
        return long_video
    expected = ("expected a vdengine.longvideo strategy (Autoregressive, Sliding, Keyframes, "
                f"SharedNoise) or its name ({', '.join(STRATEGIES)}), optionally with settings "
                "and '+shared_noise', e.g. 'sliding(stride=4)+shared_noise(lam=0.5)'")
    if not isinstance(long_video, str):
        raise TypeError(f"long_video: {expected}; got {type(long_video).__name__}")
    parts = [_parse_part(p, long_video, expected) for p in long_video.split("+")]
    names = [name for name, _ in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"long_video: a strategy is named twice in {long_video!r}")
    windows = [(n, kw) for n, kw in parts if n != "shared_noise"]
    noise = [kw for n, kw in parts if n == "shared_noise"]
    if len(windows) > 1:
        raise ValueError(f"long_video: {' and '.join(n for n, _ in windows)} cannot be combined "
                         f"(one window strategy at a time), got {long_video!r}")
    if not windows:
        return _build(SharedNoise, noise[0])
    name, kwargs = windows[0]
    shared = _build(SharedNoise, noise[0]) if noise else None
    return dataclasses.replace(_build(STRATEGIES[name], kwargs), noise=shared)


def _parse_part(text: str, whole: str, expected: str) -> tuple[str, dict[str, Any]]:
    """'sliding(stride=4, blend=uniform)' → ('sliding', {'stride': 4, 'blend': 'uniform'})."""
    text = text.strip()
    name, _, rest = text.partition("(")
    name = name.strip()
    if name not in STRATEGIES or (rest and not rest.endswith(")")):
        raise ValueError(f"long_video: unknown strategy {whole!r}; {expected}")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (i.strip() for i in rest[:-1].split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"long_video: expected key=value in {name}(...), got {item!r}")
        kwargs[key.strip()] = _value(value.strip())
    return name, kwargs


def _value(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return None if text == "None" else text


def _build(cls, kwargs: dict[str, Any]):
    known = {f.name for f in dataclasses.fields(cls)} - {"noise"}  # noise: "+shared_noise(...)"
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"long_video: {cls.name} has no setting {unknown[0]!r} (its settings: "
                         f"{', '.join(sorted(known))})")
    return cls(**kwargs)


def _check_window(strategy) -> None:
    if strategy.window is not None:
        check_int(f"{type(strategy).__name__}.window", strategy.window,
                  min=strategy.min_window)


def _resolve_window(strategy, spec: DenoiserSpec):
    model_window = spec.frame_limit
    L = strategy.window if strategy.window is not None else model_window
    if L is None:
        raise ValueError(f"{type(strategy).__name__}.window is required: model {spec.name!r} "
                         "has no fixed frame window")
    if model_window is not None and L > model_window:
        raise ValueError(f"{type(strategy).__name__}.window must be <= the model's window "
                         f"({model_window} frames), got {L}")
    if L < strategy.min_window:
        raise ValueError(f"{type(strategy).__name__}.window must be >= {strategy.min_window}, "
                         f"got {L}")
    return dataclasses.replace(strategy, window=L)


__all__ = [
    "BLENDS",
    "STRATEGIES",
    "Autoregressive",
    "Keyframes",
    "SharedNoise",
    "Sliding",
    "Strategy",
    "as_strategy",
]

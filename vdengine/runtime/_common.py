"""What the graph backends (onnxruntime, TensorRT) share: checking an exported graph against the
inputs the sampler feeds, and turning a denoiser call into the graph's input tensors.

A graph backend is a callable with VideoUNet's signature and a ``config``:

    out = denoiser(x [B, F, C, H, W], t [1], label=[B] | None, context=None, context_mask=None)

Inputs stay torch tensors on the pipeline's device; each backend binds their device pointers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from vdengine.export import INPUT_RANKS, OUTPUT_NAME, config_from_metadata, input_names
from vdengine.models.config import ModelConfig

#: element type names (ONNX's "tensor(float)" spelled without the wrapper) -> torch dtypes
ELEMENT_TYPES = {"float": torch.float32, "float16": torch.float16, "int64": torch.int64,
                 "bfloat16": torch.bfloat16, "int32": torch.int32}
FLOAT_TYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class TensorSpec:
    """One graph input or output: name, dims (int = fixed, None = dynamic), dtype."""

    name: str
    dims: tuple[int | None, ...]
    dtype: torch.dtype | None


@dataclass
class GraphSpec:
    """An exported denoiser graph checked against what vdengine's sampler feeds."""

    source: str
    config: ModelConfig
    metadata: dict[str, str]
    inputs: list[TensorSpec]
    output: TensorSpec
    dtype: torch.dtype = field(init=False)  # of x, context, context_mask and out

    def __post_init__(self) -> None:
        self.dtype = self.inputs[0].dtype

    @property
    def batch(self) -> int | None:
        """The fixed batch (rows) of the graph, None when dynamic."""
        return self.inputs[0].dims[0]

    @property
    def frames(self) -> int | None:
        return self.inputs[0].dims[1]

    @property
    def weights_sha256(self) -> str | None:
        return self.metadata.get("weights_sha256")


def check_graph(source: str, metadata: dict[str, str], inputs: list[TensorSpec],
                outputs: list[TensorSpec]) -> GraphSpec:
    """Check an exported graph's metadata and signature; ValueError naming the first mismatch."""
    cfg = config_from_metadata(metadata, source)
    for key, want in (("window", cfg.window), ("prediction_type", cfg.prediction_type),
                      ("schedule", cfg.schedule)):
        if key in metadata and metadata[key] != str(want):
            raise ValueError(f"{source}: metadata {key}={metadata[key]!r} contradicts its "
                             f"config ({key}={want!r})")
    want_names = input_names(cfg)
    got_names = [i.name for i in inputs]
    if got_names != want_names:
        raise ValueError(f"{source}: graph inputs are {got_names}, but a {cfg.name!r} model "
                         f"(num_classes={cfg.num_classes}, context={cfg.context}) is fed "
                         f"{want_names}")
    c, s = cfg.channels, cfg.image_size
    expect = {"x": (None, None, c, s, s), "t": (1,), "label": (None,),
              "context": (None, None, c, s, s), "context_mask": (None, None)}
    for spec in inputs:
        rank = INPUT_RANKS[spec.name]
        if len(spec.dims) != rank:
            raise ValueError(f"{source}: input {spec.name!r} has rank {len(spec.dims)}, the "
                             f"sampler feeds rank {rank}")
        for axis, (got, want) in enumerate(zip(spec.dims, expect[spec.name])):
            if want is not None and got is not None and got != want:
                raise ValueError(f"{source}: input {spec.name!r} has size {got} on axis {axis}, "
                                 f"the model feeds {want} (shape {_fmt(expect[spec.name])})")
        frames = spec.dims[1] if spec.name in ("x", "context") else None
        if frames is not None and frames > cfg.window:
            raise ValueError(f"{source}: input {spec.name!r} has {frames} frames, more than "
                             f"the model window of {cfg.window}")
    x = inputs[0]
    if x.dtype not in (torch.float32, torch.float16):
        raise ValueError(f"{source}: input 'x' is {x.dtype}, expected float32 or float16")
    typed = {"t": (torch.float32,), "label": (torch.int64,), "context": (x.dtype,),
             "context_mask": (x.dtype,)}
    for spec in inputs[1:]:
        if spec.dtype not in typed[spec.name]:
            raise ValueError(f"{source}: input {spec.name!r} is {spec.dtype}, expected "
                             f"{typed[spec.name][0]}")
    if len(outputs) != 1 or outputs[0].name != OUTPUT_NAME or len(outputs[0].dims) != 5:
        got = [(o.name, len(o.dims)) for o in outputs]
        raise ValueError(f"{source}: expected one rank-5 output {OUTPUT_NAME!r}, got {got}")
    return GraphSpec(source, cfg, dict(metadata), list(inputs), outputs[0])


def _fmt(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


class GraphDenoiser:
    """Base of the graph backends: argument checks and input preparation (no host sync)."""

    spec: GraphSpec
    device: torch.device

    @property
    def config(self) -> ModelConfig:
        return self.spec.config

    @property
    def metadata(self) -> dict[str, str]:
        return self.spec.metadata

    def prepare(self, x: Tensor, t, label, context, context_mask) -> dict[str, Tensor]:
        """The graph's input tensors, contiguous, in the graph's dtypes, on self.device."""
        cfg, spec = self.config, self.spec
        if not isinstance(x, Tensor) or x.dim() != 5:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a [B, F, C, H, W] tensor, got {got}")
        b, f = x.shape[:2]
        want = (cfg.channels, cfg.image_size, cfg.image_size)
        if tuple(x.shape[2:]) != want:
            raise ValueError(f"x must be [B, F, {want[0]}, {want[1]}, {want[2]}], "
                             f"got {tuple(x.shape)}")
        if x.device != self.device:
            raise ValueError(f"x is on {x.device}, the {spec.source} session runs on "
                             f"{self.device}")
        if spec.batch is not None and b != spec.batch:
            raise ValueError(f"{spec.source} was exported for a fixed batch of {spec.batch} "
                             f"rows but is fed {b} (videos, x2 with guidance); re-export with "
                             "--batch dynamic")
        if spec.frames is not None and f != spec.frames:
            raise ValueError(f"{spec.source} was exported for {spec.frames} frames but is fed "
                             f"{f}; re-export with --frames dynamic or --frames {f}")
        if f > cfg.window:
            raise ValueError(f"x has {f} frames, more than the model window {cfg.window}")
        dt = spec.dtype
        feeds = {"x": x.to(dt).contiguous()}
        t = torch.as_tensor(t, dtype=torch.float32, device=self.device).reshape(-1)
        if t.numel() != 1:
            raise ValueError(f"the {spec.source} graph takes one timestep shared by all rows "
                             f"(t [1]), got t of shape {tuple(t.shape)}")
        feeds["t"] = t.contiguous()
        if cfg.num_classes > 0:
            if label is None:
                label = torch.full((b,), cfg.num_classes, dtype=torch.long, device=self.device)
            label = torch.as_tensor(label, device=self.device).long().reshape(-1)
            if label.numel() == 1 and b > 1:
                label = label.expand(b)
            if label.numel() != b:
                raise ValueError(f"label must be [B={b}], got {tuple(label.shape)}")
            feeds["label"] = label.contiguous()
        elif label is not None:
            raise ValueError("this model is unconditional (num_classes = 0): pass label=None")
        if cfg.context:
            if context is None:
                context, context_mask = self._zeros((b, f, *want), dt), self._zeros((b, f), dt)
            elif context_mask is None:
                raise ValueError("context_mask [B, F] is required when context is given")
            if tuple(context.shape) != tuple(x.shape) or tuple(context_mask.shape) != (b, f):
                raise ValueError(f"context must be {tuple(x.shape)} and context_mask {(b, f)}, "
                                 f"got {tuple(context.shape)} and {tuple(context_mask.shape)}")
            feeds["context"] = context.to(self.device, dt).contiguous()
            feeds["context_mask"] = context_mask.to(self.device, dt).contiguous()
        elif context is not None or context_mask is not None:
            raise ValueError("this model has no context conditioning (config.context is False)")
        return feeds

    def _zeros(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """A cached zero tensor (read-only input: "no context frames")."""
        cache = self.__dict__.setdefault("_zero_cache", {})
        key = (shape, dtype)
        if key not in cache:
            if len(cache) > 8:
                cache.clear()
            cache[key] = torch.zeros(shape, dtype=dtype, device=self.device)
        return cache[key]


__all__ = ["ELEMENT_TYPES", "GraphDenoiser", "GraphSpec", "TensorSpec", "check_graph"]

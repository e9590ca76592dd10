"""What the graph backends (onnxruntime, TensorRT) share: the Denoiser protocol on top of an
exported graph, and turning a denoiser call into the graph's input tensors.

    den = load_graph("m.onnx", "cpu")                     # vdengine.runtime.load_graph
    den.spec       # DenoiserSpec, built from the ModelConfig in the graph's metadata
    den.graph      # GraphSpec: the checked signature and metadata (vdengine.runtime.contract)
    out = den(x [B, F, C, H, W], t [1] or [B], label=[B] | None, context=None, context_mask=None)

Inputs stay torch tensors on the denoiser's device; each backend binds their device pointers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vdengine.denoiser import DenoiserSpec
from vdengine.models.config import ModelConfig
from vdengine.runtime.contract import GraphSpec

#: dtypes the engine may keep its tensors in around a graph (the graph casts at its boundary)
ENGINE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def graph_device(device: str | torch.device) -> torch.device:
    """cpu or cuda:i (an index always, so that it compares equal to the tensors' device)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {device!r}")
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


class GraphDenoiser:
    """Base of the graph backends: the Denoiser protocol, argument checks, input preparation.

    A subclass sets ``graph`` (check_graph's GraphSpec), ``device`` and ``path``, then calls
    ``_init_engine_side(dtype)``.

    Attributes:
        spec: the DenoiserSpec of the exported model (``config.denoiser_spec()``).
        graph: the graph's checked signature and metadata.
        dtype: the dtype the engine keeps its tensors in (x, the prediction); the graph's own I/O
            dtype is ``graph.dtype`` and the call casts between them.
    """

    backend: str
    graph: GraphSpec
    device: torch.device
    spec: DenoiserSpec
    dtype: torch.dtype

    def _init_engine_side(self, dtype: torch.dtype | None) -> None:
        if dtype is None:
            dtype = torch.float32  # the sampler's state in float32; the graph casts at its edge
        if dtype not in ENGINE_DTYPES:
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        if self.device.type == "cpu" and dtype != torch.float32:
            raise ValueError(f"dtype {dtype} is not supported on the CPU: its kernels are float32")
        self.dtype = dtype
        self.spec = self.graph.config.denoiser_spec()

    @property
    def config(self) -> ModelConfig:
        """The ModelConfig the graph was exported with (from its metadata)."""
        return self.graph.config

    @property
    def metadata(self) -> dict[str, str]:
        return self.graph.metadata

    def graph_inputs(self, x: Tensor, t, label, context, context_mask) -> dict[str, Tensor]:
        """The graph's input tensors, contiguous, in the graph's dtypes, on self.device."""
        cfg, graph = self.config, self.graph
        if not isinstance(x, Tensor) or x.dim() != 5:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a [B, F, C, H, W] tensor, got {got}")
        b, f = x.shape[:2]
        want = (cfg.channels, cfg.image_size, cfg.image_size)
        if tuple(x.shape[2:]) != want:
            raise ValueError(f"x must be [B, F, {want[0]}, {want[1]}, {want[2]}], "
                             f"got {tuple(x.shape)}")
        if x.device != self.device:
            raise ValueError(f"x is on {x.device}, the {graph.source} graph runs on "
                             f"{self.device}")
        if graph.batch is not None and b != graph.batch:
            raise ValueError(f"{graph.source} was exported for a fixed batch of {graph.batch} "
                             f"rows but is fed {b} (videos, x2 with guidance); re-export with "
                             "--batch dynamic")
        if graph.frames is not None and f != graph.frames:
            raise ValueError(f"{graph.source} was exported for {graph.frames} frames but is fed "
                             f"{f}; re-export with --frames dynamic or --frames {f}")
        if f > cfg.window:
            raise ValueError(f"x has {f} frames, more than the model window {cfg.window}")
        dt = graph.dtype
        feeds = {"x": x.to(dt).contiguous(), "t": self._shared_timestep(t, b)}
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

    def _shared_timestep(self, t, batch: int) -> Tensor:
        """t as the graph's [1] float32 input. The graph takes one timestep for all rows (the
        engine's loops share it); t [B] is accepted when its rows are equal, which costs a host
        sync on CUDA (pass t [1] to avoid it)."""
        t = torch.as_tensor(t, dtype=torch.float32, device=self.device).reshape(-1)
        if t.numel() == batch > 1 and bool((t == t[0]).all()):
            t = t[:1]
        if t.numel() != 1:
            raise ValueError(f"the {self.graph.source} graph takes one timestep shared by all "
                             f"rows (t [1], or [B] with equal rows), got t of shape "
                             f"{tuple(t.shape)}")
        return t.contiguous()

    def _zeros(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """A cached zero tensor (read-only input: "no context frames")."""
        cache = self.__dict__.setdefault("_zero_cache", {})
        key = (shape, dtype)
        if key not in cache:
            if len(cache) > 8:
                cache.clear()
            cache[key] = torch.zeros(shape, dtype=dtype, device=self.device)
        return cache[key]


__all__ = ["ENGINE_DTYPES", "GraphDenoiser", "graph_device"]

"""The exported-graph contract: what `vdengine export` writes and the graph backends read.

One module owns it; vdengine/export.py writes graphs by it, vdengine/runtime/ loads them by it.

- Inputs, in order: ``x`` [B, F, C, H, W], ``t`` [1] float32 (one timestep shared by every row),
  then ``label`` [B] int64 when the model has classes, then ``context`` [B, F, C, H, W] and
  ``context_mask`` [B, F] when it takes context frames (``input_names``, ``INPUT_RANKS``).
  One output ``out`` [B, F, C, H, W] in the model's prediction type (``OUTPUT_NAME``).
- Metadata: string key/value pairs (ONNX ``metadata_props``; for a TensorRT engine, which carries
  none, the JSON sidecar ``<engine>.json``, ``metadata_path``). ``config`` holds the whole
  ModelConfig, so a graph runs without its model directory; ``weights_sha256`` names the weights
  it was exported from (``weights_digest``), so ``check_against`` can compare it with a model
  directory. ``graph_metadata`` builds the keys, ``config_from_metadata`` reads them back.
- ``check_graph`` checks a loaded graph's signature and metadata against what the engine feeds.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from vdengine.models.config import ModelConfig

FORMAT = "vdengine-denoiser/1"
OUTPUT_NAME = "out"
#: rank of every graph input the runtime may feed
INPUT_RANKS = {"x": 5, "t": 1, "label": 1, "context": 5, "context_mask": 2}
#: element type names (ONNX's "tensor(float)" spelled without the wrapper) -> torch dtypes
ELEMENT_TYPES = {"float": torch.float32, "float16": torch.float16, "int64": torch.int64,
                 "bfloat16": torch.bfloat16, "int32": torch.int32}
#: the I/O dtypes a graph may have, by their metadata name
GRAPH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def input_names(config: ModelConfig) -> list[str]:
    """The graph inputs of a model with this config, in order."""
    names = ["x", "t"]
    if config.num_classes > 0:
        names.append("label")
    if config.context:
        names += ["context", "context_mask"]
    return names


def weights_digest(state: dict[str, Tensor]) -> str:
    """sha256 over the sorted (name, dtype, shape, bytes) of a state dict: which weights a graph
    was exported from, so that ``check_against`` can refuse a graph of other weights."""
    h = hashlib.sha256()
    for name in sorted(state):
        v = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def graph_metadata(config: ModelConfig, *, source: str, dtype: torch.dtype,
                   batch: int | None, frames: int | None, opset: int,
                   weights_sha256: str) -> dict[str, str]:
    """The contract's metadata of a graph (batch/frames None = dynamic). The exporter adds its
    own keys (versions, its verification) after these."""
    dtype_name = {v: k for k, v in GRAPH_DTYPES.items()}[dtype]
    return {
        "vdengine_format": FORMAT,
        "model_name": config.name,
        "model_source": source,
        "window": str(config.window),
        "prediction_type": config.prediction_type,
        "schedule": config.schedule,
        "num_train_timesteps": str(config.num_train_timesteps),
        "image_size": str(config.image_size),
        "channels": str(config.channels),
        "num_classes": str(config.num_classes),
        "context": str(config.context).lower(),
        "dtype": dtype_name,
        "batch": str(batch or "dynamic"),
        "frames": str(frames or "dynamic"),
        "inputs": ",".join(input_names(config)),
        "opset": str(opset),
        "weights_sha256": weights_sha256,
        "config": config.to_json(),
    }


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when empty)."""
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of an ONNX file ({} when it has none), read with onnx or, without it, with
    onnxruntime (a deployment may have only onnxruntime)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"ONNX file {str(p)!r} does not exist")
    try:
        import onnx
    except ImportError:
        onnx = None
    try:
        if onnx is not None:
            proto = onnx.load(str(p), load_external_data=False)
            return {e.key: e.value for e in proto.metadata_props}
        import onnxruntime as ort

        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        return dict(sess.get_modelmeta().custom_metadata_map)
    except ImportError:
        raise ImportError("reading an ONNX file needs the onnx or the onnxruntime package "
                          "(pip install onnxruntime)") from None
    except Exception as e:  # noqa: BLE001 - protobuf / onnxruntime errors have many types
        raise ValueError(f"{str(p)!r} is not a readable ONNX file: {first_line(e)}") from None


def metadata_path(engine_path: str | os.PathLike) -> Path:
    """Where a TensorRT engine's metadata lives: ``<engine>.json`` beside it (an engine carries
    none; export/build_trt_engine.py writes it from the ONNX file's metadata)."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def read_engine_metadata(engine_path: str | os.PathLike) -> dict[str, str]:
    """The sidecar metadata of a TensorRT engine; ValueError when missing or unreadable."""
    side = metadata_path(engine_path)
    if not side.is_file():
        raise ValueError(f"missing {str(side)!r}, the metadata of engine {str(engine_path)!r}: "
                         "build engines with export/build_trt_engine.py")
    try:
        meta = json.loads(side.read_text())
        return {str(k): str(v) for k, v in meta.items()}
    except (OSError, ValueError, AttributeError) as e:  # AttributeError: not a JSON object
        raise ValueError(f"unreadable engine metadata {str(side)!r}: {first_line(e)}") from None


def config_from_metadata(meta: dict[str, str], source: str) -> ModelConfig:
    """The ModelConfig stored in a graph's metadata; ValueError when vdengine did not write it."""
    if meta.get("vdengine_format") != FORMAT or "config" not in meta:
        raise ValueError(f"{source} was not exported by vdengine (no {FORMAT!r} metadata); "
                         "export it with `vdengine export --onnx ...` or vdengine.export_onnx()")
    try:
        return ModelConfig.from_dict(json.loads(meta["config"]))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{source}: invalid model config in its metadata: {first_line(e)}") from None


# ---------------------------------------------------------------------------- signature check


@dataclass
class TensorSpec:
    """One graph input or output: name, dims (int = fixed, None = dynamic), dtype."""

    name: str
    dims: tuple[int | None, ...]
    dtype: torch.dtype | None


@dataclass
class GraphSpec:
    """An exported denoiser graph, checked against what vdengine's samplers feed."""

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
        """The fixed frame count of the graph, None when dynamic."""
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
    if x.dtype not in GRAPH_DTYPES.values():
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


# ------------------------------------------------------------------------- check_against


def check_against(graph: GraphSpec, model: str | os.PathLike) -> None:
    """Raise a one-line ValueError unless ``model`` (a model directory or a shipped model name)
    has the config and the weights (``weights_sha256``) the graph was exported from."""
    from vdengine.models.loading import WEIGHTS_FILE, load_config, load_state, resolve_model_dir

    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"check_against must be a model directory or a shipped model name, "
                        f"got {type(model).__name__}")
    d = resolve_model_dir(model)  # ValueError for an unknown model
    exported_from = graph.metadata.get("model_source", "?")
    if load_config(d).to_dict() != graph.config.to_dict():
        raise ValueError(f"{graph.source} was exported from model {exported_from!r}, whose "
                         f"config differs from model {str(model)!r}'s: use it with the model it "
                         f"was exported from, or re-export it from {str(model)!r}")
    if graph.weights_sha256 is None:
        raise ValueError(f"{graph.source} records no weights_sha256: cannot check it against "
                         f"model {str(model)!r}")
    if weights_digest(load_state(Path(d) / WEIGHTS_FILE)) != graph.weights_sha256:
        raise ValueError(f"{graph.source} was exported from other weights than model "
                         f"{str(model)!r} has now (exported from {exported_from!r}): re-export "
                         f"it from {str(model)!r}")


__all__ = [
    "ELEMENT_TYPES",
    "FORMAT",
    "GRAPH_DTYPES",
    "INPUT_RANKS",
    "OUTPUT_NAME",
    "GraphSpec",
    "TensorSpec",
    "check_against",
    "check_graph",
    "config_from_metadata",
    "first_line",
    "graph_metadata",
    "input_names",
    "metadata_path",
    "read_engine_metadata",
    "read_metadata",
    "weights_digest",
]

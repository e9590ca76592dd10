"""Video denoisers: building blocks (PosGN, temporal attention/conv, α merge) and VideoUNet."""

from vdengine.models.config import ModelConfig, default_config, tiny_config
from vdengine.models.layers import (
    AlphaMerge,
    PosGN,
    PosGNTables,
    ResBlock,
    TemporalAttention,
    TemporalConvBlock,
    set_ops,
)
from vdengine.models.loading import (
    WEIGHTS_DIR,
    available_models,
    load_model,
    save_model,
)
from vdengine.models.unet import VideoUNet

__all__ = [
    "WEIGHTS_DIR",
    "AlphaMerge",
    "ModelConfig",
    "PosGN",
    "PosGNTables",
    "ResBlock",
    "TemporalAttention",
    "TemporalConvBlock",
    "VideoUNet",
    "available_models",
    "default_config",
    "load_model",
    "save_model",
    "set_ops",
    "tiny_config",
]

"""Procedural training data."""

from vdengine.data.bouncing_balls import (
    MAX_BALLS,
    PALETTE,
    PALETTE_NAMES,
    RADIUS_RANGE,
    SPEED_RANGE,
    batch_iterator,
    from_model_range,
    generate_clips,
    to_model_range,
)

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

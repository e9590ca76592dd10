"""Tiny saved models for the long-video tests, and `run_long`: a long video sampled the way
Pipeline.generate samples it, with its chunks and counters.

The models are "live" (tests/_models.py): every window's output depends on its noise, labels
and context frames, so mistakes in the plumbing change the videos."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from _models import live_tiny_model

import vdengine
from vdengine import longvideo as lv
from vdengine.api import make_generator
from vdengine.denoiser import conditioning_rows
from vdengine.models import save_model
from vdengine.sampling import GuidedSampler, SamplingStats


@pytest.fixture(scope="session")
def lv_model_dir(tmp_path_factory) -> str:
    """window 4, 16×16, context conditioning, 4 classes."""
    model = live_tiny_model(context=True, seed=7)
    return str(save_model(model, tmp_path_factory.mktemp("lv_tiny")))


@pytest.fixture(scope="session")
def lv_nocontext_dir(tmp_path_factory) -> str:
    model = live_tiny_model(context=False, seed=7)
    return str(save_model(model, tmp_path_factory.mktemp("lv_noctx")))


@pytest.fixture
def pipe(lv_model_dir):
    return vdengine.load(lv_model_dir, device="cpu")


def sampling_loop(pipe, *, steps: int = 2, batch_size: int = 1, seed: int = 0,
                  guidance_scale: float | None = None, sampler: str = "ddim",
                  **conditioning) -> GuidedSampler:
    """The GuidedSampler Pipeline.generate builds for these arguments (test_run_long_is_generate
    checks that the two agree)."""
    cond, uncond = conditioning_rows(pipe.model, batch_size, guidance_scale is not None,
                                     conditioning, pipe.device)
    return GuidedSampler(pipe.model, pipe.schedule, steps=steps, sampler=sampler,
                         sampler_options=dict(pipe.sampler_options), cond=cond, uncond=uncond,
                         guidance_scale=guidance_scale, generator=make_generator(seed, None))


@dataclass
class LongRun:
    frames: np.ndarray  # what decode returned, concatenated along frames: [B, N, ...]
    chunks: list  # the chunks as generate_chunks yielded them
    stats: SamplingStats
    strategy: lv.Strategy  # resolved


@pytest.fixture
def run_long(pipe):
    """run_long(strategy, num_frames, *, batch_size=1, seed=0, steps=2, guidance_scale=None,
    decode=None, **conditioning) -> LongRun: `strategy` (an object or its text) resolved against
    the fixture's model, sampled by vdengine.longvideo.generate_chunks (decode=None: uint8
    frames; pass e.g. ``lambda x: x`` for the latents)."""

    def run(strategy, num_frames: int, *, batch_size: int = 1, seed: int = 0, steps: int = 2,
            guidance_scale: float | None = None, decode=None, **conditioning) -> LongRun:
        resolved = lv.as_strategy(strategy).resolve(pipe.spec)
        loop = sampling_loop(pipe, steps=steps, batch_size=batch_size, seed=seed,
                             guidance_scale=guidance_scale, **conditioning)
        extra = {} if decode is None else {"decode": decode}
        chunks = list(lv.generate_chunks(loop, resolved, num_frames, batch_size,
                                         pipe.latent_shape(None), device=pipe.device,
                                         dtype=pipe.dtype, **extra))
        frames = (np.concatenate(chunks, axis=1) if isinstance(chunks[0], np.ndarray)
                  else torch.cat(chunks, dim=1))
        return LongRun(frames, chunks, loop.stats, resolved)

    return run

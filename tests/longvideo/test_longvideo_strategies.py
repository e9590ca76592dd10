"""The four long-video strategies: shapes, determinism, batching, conditioning, exactness."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import vdengine
from vdengine import longvideo as lv
from vdengine.longvideo import Autoregressive, Keyframes, SharedNoise, Sliding
from vdengine.ops import reference

ALL = [Autoregressive(), SharedNoise(), Sliding(), Keyframes(),
       Autoregressive(noise=SharedNoise()), Sliding(noise=SharedNoise()),
       Keyframes(noise=SharedNoise())]
ALL_IDS = [s.label for s in ALL]


class Spy:
    """Records every model forward's inputs (the model is not changed)."""

    def __init__(self, pipe, monkeypatch):
        self.calls = []
        model = pipe.model
        inner = model.forward

        def forward(x, t, label=None, context=None, context_mask=None):
            self.calls.append({"x": x.clone(), "label": None if label is None else label.clone(),
                               "context": None if context is None else context.clone(),
                               "mask": None if context_mask is None else context_mask.clone()})
            return inner(x, t, label=label, context=context, context_mask=context_mask)

        monkeypatch.setattr(model, "forward", forward)


@pytest.mark.parametrize("strategy", [Autoregressive(context_guidance=2.0),
                                      Sliding(noise=SharedNoise(0.3)), Keyframes()],
                         ids=lambda s: s.label)
def test_run_long_is_generate(pipe, run_long, strategy):
    # The tests' sampling helper builds the loop as Pipeline.generate does (same frames).
    kw = {"batch_size": 2, "seed": 4, "steps": 2, "guidance_scale": 2.0, "label": [1, 3]}
    got = run_long(strategy, 9, **kw).frames
    want = pipe.generate(num_frames=9, long_video=strategy, progress=False, **kw).frames
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("strategy", ALL, ids=ALL_IDS)
def test_length_batch_and_determinism(run_long, strategy):
    # 11 frames: not a multiple of the window (4), the stride (2) or L − S (2) + first window.
    a = run_long(strategy, 11, batch_size=2, seed=5)
    b = run_long(strategy, 11, batch_size=2, seed=5)
    c = run_long(strategy, 11, batch_size=2, seed=6)
    assert a.frames.shape == (2, 11, 16, 16, 3) and a.frames.dtype == np.uint8
    assert all(ch.shape[1] >= 1 for ch in a.chunks)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    assert not np.array_equal(a.frames[0], a.frames[1])  # the two videos are different samples
    assert a.stats.output_frames == 11


@pytest.mark.parametrize("strategy", ALL, ids=ALL_IDS)
def test_videos_share_every_forward(run_long, strategy):
    one = run_long(strategy, 13, batch_size=1).stats
    three = run_long(strategy, 13, batch_size=3).stats
    assert three.forwards == one.forwards  # more videos: more rows, not more calls
    assert three.rows == [3 * r for r in one.rows]


@pytest.mark.parametrize("strategy", ["autoregressive", "sliding", "keyframes"])
@pytest.mark.parametrize("n", [1, 3, 4])
def test_one_window_equals_plain_generate(pipe, strategy, n):
    plain = pipe.generate(num_frames=n, steps=3, seed=2, progress=False)
    long = pipe.generate(num_frames=n, steps=3, seed=2, progress=False, long_video=strategy)
    np.testing.assert_array_equal(long.frames, plain.frames)
    # and not because every video is the same: another seed differs
    other = pipe.generate(num_frames=n, steps=3, seed=3, progress=False, long_video=strategy)
    assert not np.array_equal(other.frames, plain.frames)


def test_boundaries_are_where_windows_meet(pipe):
    spec = pipe.spec  # window 4
    cases = [(Autoregressive(context_frames=2), 9, [4, 6, 8]),
             (Autoregressive(context_frames=1), 9, [4, 7]),
             (SharedNoise(), 12, [4, 8]),
             (Sliding(stride=2), 9, [2, 4, 5, 6, 8]),
             (Keyframes(), 12, [3, 4, 6, 7, 9]),
             (Sliding(), 3, [])]
    for strategy, n, want in cases:
        assert lv.boundaries(strategy.resolve(spec), n) == want, strategy


def test_autoregressive_conditions_on_the_last_frames(pipe, run_long, monkeypatch):
    spy = Spy(pipe, monkeypatch)
    steps, S, L = 2, 2, 4
    run = run_long(Autoregressive(context_frames=S, context_guidance=1.0), 9, steps=steps)
    assert [c.shape[1] for c in run.chunks] == [4, 2, 2, 1]
    assert run.stats.windows == 4 and run.stats.forwards == 4 * steps
    known = (run.frames.astype(np.float32) / 127.5 - 1.0).transpose(0, 1, 4, 2, 3)  # BFCHW
    timesteps = pipe.schedule.timesteps(steps, "trailing").tolist()
    for w, start in enumerate(lv.autoregressive.plan(9, L, S)):
        for call in spy.calls[w * steps : (w + 1) * steps]:
            assert call["x"].shape[0] == 1  # s = 1: no unconditioned rows
            if w == 0:
                assert call["context"] is None
                continue
            assert call["mask"].tolist() == [[1.0, 1.0, 0.0, 0.0]]
            ctx = call["context"][0, :S].numpy()
            np.testing.assert_allclose(ctx, known[0, start : start + S], atol=1 / 127.5 + 1e-6)
        if w > 0:  # the known frames enter x_t noised with one ε, as in training
            eps = []
            for call, t in zip(spy.calls[w * steps : (w + 1) * steps], timesteps):
                ab = float(pipe.schedule.alphas_cumprod[t])
                ctx = call["context"][:, :S]
                eps.append((call["x"][:, :S] - ab**0.5 * ctx) / (1 - ab) ** 0.5)
            torch.testing.assert_close(eps[0], eps[1], atol=1e-4, rtol=1e-4)


def test_context_and_label_guidance_rows(pipe, run_long, monkeypatch):
    spy = Spy(pipe, monkeypatch)
    lab = torch.tensor([1, 2])
    # Context guidance only: [no context; context], labels kept on both halves.
    run_long(Autoregressive(context_guidance=2.0), 6, batch_size=2, label=lab)
    later = [c for c in spy.calls if c["context"] is not None]
    assert later and all(c["x"].shape[0] == 4 for c in later)
    assert later[0]["mask"][:2].sum() == 0 and later[0]["mask"][2:].sum() == 4
    assert later[0]["label"].tolist() == [1, 2, 1, 2]
    # Both: one forward of 3B rows [no context, null; context, null; context, label].
    spy.calls.clear()
    run_long(Autoregressive(context_guidance=2.0), 6, batch_size=2, label=lab,
             guidance_scale=3.0)
    first = [c for c in spy.calls if c["context"] is None]
    later = [c for c in spy.calls if c["context"] is not None]
    assert first and all(c["x"].shape[0] == 4 for c in first)  # first window: label guidance
    assert first[0]["label"].tolist() == [4, 4, 1, 2]  # [null; label]
    assert later and all(c["x"].shape[0] == 6 for c in later)
    assert later[0]["label"].tolist() == [4, 4, 4, 4, 1, 2]
    assert later[0]["mask"].sum(dim=1).tolist() == [0, 0, 2, 2, 2, 2]


def test_context_guidance_changes_the_video(run_long):
    # s = 1 and s = 2 sample the first window alike, then differ: the context rows matter.
    plain = run_long(Autoregressive(context_guidance=1.0), 8).frames
    guided = run_long(Autoregressive(context_guidance=2.0), 8).frames
    np.testing.assert_array_equal(plain[:, :4], guided[:, :4])
    assert not np.array_equal(plain[:, 4:], guided[:, 4:])


def test_autoregressive_cost_formula(run_long):
    steps, n = 3, 4 + 2 * 20  # 21 windows
    stats = run_long(Autoregressive(context_guidance=1.5), n, steps=steps).stats
    # first window: 4 frames x 1 row; the others: 4 frames x 2 rows (context guidance)
    assert stats.frame_evals == steps * (4 + 20 * 4 * 2)
    assert stats.windows == 21


def _multidiffusion_reference(pipe, n, L, stride, steps, seed, weights):
    """Per-window DDIM updates averaged over the windows covering each frame (the definition),
    weighted by `weights` [L] (ones: MultiDiffusion's plain mean)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((1, n, 3, 16, 16), generator=gen)  # the first draw of generate_chunks
    ts = pipe.schedule.timesteps(steps, "trailing").tolist()
    ab = [float(pipe.schedule.alphas_cumprod[t]) for t in ts] + [1.0]
    starts = lv.sliding.plan(n, L, stride)
    for i, t in enumerate(ts):
        acc = torch.zeros_like(x)
        cnt = torch.zeros(n)
        for s in starts:
            xw = x[:, s : s + L]
            with torch.inference_mode():
                out = pipe.model(xw, torch.tensor([float(t)]))
            xp = reference.ddim_step(xw, out, ab[i], ab[i + 1],
                                     prediction_type=pipe.spec.prediction_type)
            acc[:, s : s + L] += xp * weights[None, :, None, None, None]
            cnt[s : s + L] += weights
        x = acc / cnt[None, :, None, None, None]
    return x


@pytest.mark.parametrize("blend, weights", [("uniform", [1.0, 1.0, 1.0, 1.0]),
                                            ("triangular", [1.0, 2.0, 2.0, 1.0])])
@pytest.mark.parametrize("n, stride", [(7, 2), (10, 3), (9, 4)])
def test_sliding_is_multidiffusion(pipe, run_long, n, stride, blend, weights):
    steps, seed, L = 3, 4, 4
    run = run_long(Sliding(stride=stride, window_batch=64, blend=blend), n, steps=steps,
                   seed=seed, decode=lambda x: x.clone())
    want = _multidiffusion_reference(pipe, n, L, stride, steps, seed, torch.tensor(weights))
    torch.testing.assert_close(run.frames, want, atol=2e-4, rtol=1e-4)
    assert run.stats.forwards == steps  # all windows of a step in one forward
    windows = len(lv.sliding.plan(n, L, stride))
    assert run.stats.rows == [windows] * steps and run.stats.windows == windows
    # A smaller window_batch splits a step into ceil(windows / window_batch) forwards, and
    # samples the same video.
    small = run_long(Sliding(stride=stride, window_batch=2, blend=blend), n, steps=steps,
                     seed=seed, decode=lambda x: x.clone())
    assert small.stats.forwards == steps * math.ceil(windows / 2)
    torch.testing.assert_close(small.frames, run.frames, atol=1e-5, rtol=1e-5)


def test_sliding_blends_differ(run_long):
    uniform = run_long(Sliding(stride=2, blend="uniform"), 9).frames
    triangular = run_long(Sliding(stride=2, blend="triangular"), 9).frames
    assert not np.array_equal(uniform, triangular)


def test_sliding_covers_every_frame():
    for n, stride in [(5, 1), (9, 4), (10, 3), (4, 4), (17, 4)]:
        starts = lv.sliding.plan(n, 4, stride)
        covered = set()
        for s in starts:
            covered.update(range(s, s + 4))
        assert covered == set(range(max(n, 4)))
        assert all(b - a <= stride for a, b in itertools.pairwise(starts))


def test_shared_noise_decomposition():
    gen = torch.Generator().manual_seed(0)
    cpu = torch.device("cpu")
    same = lv.NoiseSource(2, (3, 8, 8), gen, 1.0, cpu, torch.float32)
    a, b = same.draw(3), same.draw(2)
    assert torch.equal(a[:, :1].expand(-1, 3, -1, -1, -1), a) and torch.equal(a[:, :2], b)
    assert not torch.equal(a[0], a[1])  # one base noise per video
    half = lv.NoiseSource(1, (3, 64, 64), gen, 0.5, cpu, torch.float32)
    x = half.draw(2).reshape(2, -1)
    assert abs(float(x.var(dim=1).mean()) - 1.0) < 0.05  # still N(0, I) per frame
    assert abs(float(torch.corrcoef(x)[0, 1]) - 0.5) < 0.05
    iid = lv.NoiseSource(1, (3, 64, 64), gen, 0.0, cpu, torch.float32).draw(2).reshape(2, -1)
    assert abs(float(torch.corrcoef(iid)[0, 1])) < 0.05


def test_shared_noise_alone_is_independent_windows_from_shared_noise(pipe, run_long,
                                                                     monkeypatch):
    spy = Spy(pipe, monkeypatch)
    run_long(SharedNoise(lam=1.0), 12, steps=1)
    # λ = 1: every frame of every window starts from the same base noise.
    first = [c["x"] for c in spy.calls]
    assert len(first) == 3
    assert all(torch.equal(first[0], x) for x in first)
    assert all(c["context"] is None for c in spy.calls)


def test_shared_noise_lambda_reaches_the_noise(run_long):
    # The λ of SharedNoise(...) — alone or as noise= — is the one the noise is drawn with.
    for make in (lambda lam: SharedNoise(lam), lambda lam: Sliding(noise=SharedNoise(lam))):
        a = run_long(make(0.2), 9).frames
        b = run_long(make(0.8), 9).frames
        assert not np.array_equal(a, b)
    plain = run_long(Sliding(), 9).frames
    shared = run_long(Sliding(noise=SharedNoise(0.5)), 9).frames
    assert not np.array_equal(plain, shared)


def test_keyframes_fill_with_both_ends_known(pipe, run_long, monkeypatch):
    spy = Spy(pipe, monkeypatch)
    steps, n = 2, 12  # window 4: keyframes 0, 3, 6, 9; frames 10, 11 from the keyframe pass
    run = run_long(Keyframes(window_batch=2, context_guidance=1.0), n, steps=steps)
    assert run.frames.shape[1] == n
    fills = [c for c in spy.calls if c["mask"] is not None and c["mask"][0, -1] == 1]
    assert fills and all(c["mask"][:, 1:-1].sum() == 0 and c["mask"][:, 0].all() for c in fills)
    assert [c["x"].shape[0] for c in fills] == [2] * steps + [1] * steps  # 3 gaps, batch of 2
    known = (run.frames.astype(np.float32) / 127.5 - 1.0).transpose(0, 1, 4, 2, 3)[0]
    ends = torch.cat([fills[0]["context"][:, [0, -1]], fills[-1]["context"][:, [0, -1]]])
    keys = [0, 3, 3, 6, 6, 9]
    np.testing.assert_allclose(ends.reshape(6, 3, 16, 16).numpy(), known[keys],
                               atol=1 / 127.5 + 1e-6)


def test_model_without_context_runs_sliding_and_shared_noise(lv_nocontext_dir):
    pipe = vdengine.load(lv_nocontext_dir, device="cpu")
    for strategy in ("sliding", "shared_noise", Sliding(noise=SharedNoise(0.5))):
        video = pipe.generate(num_frames=9, steps=2, progress=False, long_video=strategy)
        assert video.frames.shape == (1, 9, 16, 16, 3)


def test_label_guidance_passes_through(pipe):
    a = pipe.generate(num_frames=9, steps=2, progress=False, long_video="sliding", label=1,
                      guidance_scale=3.0)
    b = pipe.generate(num_frames=9, steps=2, progress=False, long_video="sliding", label=2,
                      guidance_scale=3.0)
    assert a.frames.shape == (1, 9, 16, 16, 3) and not np.array_equal(a.frames, b.frames)

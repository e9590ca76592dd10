"""Long-video strategies as values: the text shorthand, resolve() against a model, and bad
requests — a one-line ValueError/TypeError naming the setting, raised by the strategy's
constructor, by resolve() or by as_strategy(), always before anything is sampled."""

from __future__ import annotations

import dataclasses

import pytest

import vdengine
from vdengine.longvideo import Autoregressive, Keyframes, SharedNoise, Sliding, as_strategy

# ---------------------------------------------------------------------------- the text form


@pytest.mark.parametrize(
    "text, want",
    [
        ("sliding", Sliding()),
        ("sliding()", Sliding()),
        ("sliding(stride=4, blend=uniform)", Sliding(stride=4, blend="uniform")),
        (" sliding ( stride = 4 , window_batch=3 ) ", Sliding(stride=4, window_batch=3)),
        ("sliding(stride=None)", Sliding()),
        ("autoregressive", Autoregressive()),
        ("autoregressive(context_frames=1, context_guidance=2)",
         Autoregressive(context_frames=1, context_guidance=2.0)),
        ("keyframes(window=3, window_batch=5)", Keyframes(window=3, window_batch=5)),
        ("shared_noise", SharedNoise()),
        ("shared_noise(lam=0.25, window=2)", SharedNoise(0.25, window=2)),
        ("autoregressive+shared_noise(lam=0.3)", Autoregressive(noise=SharedNoise(0.3))),
        ("shared_noise(lam=0.3)+autoregressive(context_frames=1)",
         Autoregressive(context_frames=1, noise=SharedNoise(0.3))),
        ("sliding(stride=8)+shared_noise(lam=0.5)", Sliding(stride=8, noise=SharedNoise(0.5))),
        ("keyframes+shared_noise", Keyframes(noise=SharedNoise())),
    ],
)
def test_text_form(text, want):
    got = as_strategy(text)
    assert got == want and type(got) is type(want)


def test_objects_pass_through_and_labels_read_back():
    for s in (Sliding(stride=3), Autoregressive(noise=SharedNoise(0.1)), SharedNoise(0.7)):
        assert as_strategy(s) is s
    assert Sliding(noise=SharedNoise()).label == "sliding+shared_noise"
    assert as_strategy(Keyframes(noise=SharedNoise()).label) == Keyframes(noise=SharedNoise())
    assert as_strategy(SharedNoise().label) == SharedNoise()


@pytest.mark.parametrize(
    "text, error, match",
    [
        ("zigzag", ValueError, "long_video: unknown strategy 'zigzag'"),
        ("Sliding", ValueError, "long_video: unknown strategy 'Sliding'"),
        ("sliding(stride=4", ValueError, "long_video: unknown strategy"),
        ("sliding(strid=4)", ValueError, "long_video: sliding has no setting 'strid'"),
        ("sliding(stride)", ValueError, r"expected key=value in sliding\(...\), got 'stride'"),
        # a setting of another strategy is not silently ignored
        ("autoregressive(stride=2)", ValueError, "autoregressive has no setting 'stride'"),
        ("sliding(context_frames=1)", ValueError, "sliding has no setting 'context_frames'"),
        ("keyframes(blend=uniform)", ValueError, "keyframes has no setting 'blend'"),
        ("shared_noise(stride=2)", ValueError, "shared_noise has no setting 'stride'"),
        # bad value types
        ("sliding(stride=four)", TypeError, "Sliding.stride must be an int, got str"),
        ("sliding(stride=1.5)", TypeError, "Sliding.stride must be an int, got float"),
        ("shared_noise(lam=half)", TypeError, "SharedNoise.lam must be a float, got str"),
        ("autoregressive(context_guidance=x)", TypeError,
         "Autoregressive.context_guidance must be a float"),
        # combinations
        ("autoregressive+sliding", ValueError, "autoregressive and sliding cannot be combined"),
        ("sliding+keyframes+shared_noise", ValueError, "sliding and keyframes cannot be combined"),
        ("sliding+sliding", ValueError, "named twice"),
        ("shared_noise+shared_noise(lam=0.2)", ValueError, "named twice"),
    ],
)
def test_bad_text(text, error, match):
    with pytest.raises(error, match=match):
        as_strategy(text)


@pytest.mark.parametrize("value", [3, None, 0.5, ["sliding"], Sliding])
def test_not_a_strategy(value):
    with pytest.raises(TypeError, match="long_video: expected a vdengine.longvideo strategy"):
        as_strategy(value)


# ------------------------------------------------------------- constructor errors, both forms
@pytest.mark.parametrize(
    "make, text, error, match",
    [
        (lambda: Autoregressive(context_frames=0), "autoregressive(context_frames=0)",
         ValueError, "Autoregressive.context_frames must be >= 1"),
        (lambda: Keyframes(context_frames=-1), "keyframes(context_frames=-1)",
         ValueError, "Keyframes.context_frames must be >= 1"),
        (lambda: Autoregressive(context_guidance=0.5), "autoregressive(context_guidance=0.5)",
         ValueError, "Autoregressive.context_guidance must be >= 1"),
        (lambda: Sliding(stride=0), "sliding(stride=0)", ValueError,
         "Sliding.stride must be >= 1"),
        (lambda: Sliding(stride=-2), "sliding(stride=-2)", ValueError,
         "Sliding.stride must be >= 1"),
        (lambda: Sliding(stride=1.5), "sliding(stride=1.5)", TypeError,
         "Sliding.stride must be an int"),
        (lambda: Sliding(blend="gaussian"), "sliding(blend=gaussian)", ValueError,
         "Sliding.blend must be one of"),
        (lambda: Sliding(window_batch=0), "sliding(window_batch=0)", ValueError,
         "Sliding.window_batch must be >= 1"),
        (lambda: Keyframes(window_batch=0), "keyframes(window_batch=0)", ValueError,
         "Keyframes.window_batch must be >= 1"),
        (lambda: Keyframes(window=2), "keyframes(window=2)", ValueError,
         "Keyframes.window must be >= 3"),
        (lambda: Autoregressive(window=1), "autoregressive(window=1)", ValueError,
         "Autoregressive.window must be >= 2"),
        (lambda: Sliding(window=0), "sliding(window=0)", ValueError,
         "Sliding.window must be >= 1"),
        (lambda: SharedNoise(-0.1), "shared_noise(lam=-0.1)", ValueError,
         r"SharedNoise.lam \(λ\) must be in \[0, 1\]"),
        (lambda: Sliding(noise=SharedNoise(1.01)), "sliding+shared_noise(lam=1.01)",
         ValueError, r"SharedNoise.lam \(λ\) must be in \[0, 1\]"),
        (lambda: SharedNoise(float("nan")), "shared_noise(lam=nan)", ValueError,
         "SharedNoise.lam must be finite"),
        (lambda: SharedNoise(window=0), "shared_noise(window=0)", ValueError,
         "SharedNoise.window must be >= 1"),
    ],
)
def test_bad_settings_object_and_text(make, text, error, match):
    with pytest.raises(error, match=match) as obj:
        make()
    with pytest.raises(error, match=match) as txt:
        as_strategy(text)
    assert len(str(obj.value).splitlines()) == 1 and str(obj.value) == str(txt.value)


def test_noise_must_be_shared_noise():
    with pytest.raises(TypeError, match="Sliding.noise must be a SharedNoise or None, got float"):
        Sliding(noise=0.5)
    with pytest.raises(TypeError, match="Autoregressive.noise must be a SharedNoise"):
        Autoregressive(noise="shared_noise")


# ------------------------------------------------------------------------------- values
def test_strategies_are_frozen_and_hashable():
    s = Sliding(stride=2, noise=SharedNoise(0.3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.stride = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.noise.lam = 0.9
    assert hash(s) == hash(Sliding(stride=2, noise=SharedNoise(0.3)))
    assert len({Sliding(), Sliding(), as_strategy("sliding")}) == 1
    table = {Autoregressive(): "a", Autoregressive(context_frames=1): "b", SharedNoise(): "c",
             Sliding(noise=SharedNoise(0.3)): "d", Sliding(noise=SharedNoise(0.4)): "e"}
    assert len(table) == 5
    assert table[as_strategy("sliding+shared_noise(lam=0.3)")] == "d"
    # same settings, different strategies: not equal
    assert Autoregressive() != Keyframes(window_batch=2)


# ------------------------------------------------------------------------------- resolve()
def test_resolve_fills_the_window_and_keeps_the_original(pipe):
    spec = pipe.spec  # window 4, context conditioning
    ar = Autoregressive()
    r = ar.resolve(spec)
    assert r == Autoregressive(window=4, context_frames=2, context_guidance=1.5)
    assert ar.window is None  # resolve returns a new value
    sl = Sliding(noise=SharedNoise()).resolve(spec)
    assert (sl.window, sl.stride, sl.noise_lambda, sl.label, sl.blend, sl.window_batch) == (
        4, 2, 0.5, "sliding+shared_noise", "triangular", 2)
    assert Sliding(stride=3).resolve(spec).stride == 3
    assert Sliding(window=3).resolve(spec).stride == 1  # window // 2
    assert Sliding(window=2).resolve(spec) == Sliding(window=2, stride=1)
    assert SharedNoise(0.25).resolve(spec) == SharedNoise(0.25, window=4)
    assert Keyframes(window=3).resolve(spec).window == 3
    assert sl.resolve(spec) == sl  # resolving twice changes nothing
    assert Sliding().noise_lambda is None and Autoregressive().noise_lambda is None


def test_resolve_with_a_model_without_a_window(pipe):
    spec = dataclasses.replace(pipe.spec, window=None)
    with pytest.raises(ValueError, match="Sliding.window is required: model .* has no fixed "
                                         "frame window"):
        Sliding().resolve(spec)
    assert Sliding(window=6).resolve(spec) == Sliding(window=6, stride=3)
    assert SharedNoise(window=9).resolve(spec).window == 9


@pytest.mark.parametrize(
    "strategy, match",
    [
        (Autoregressive(context_frames=4),
         r"Autoregressive.context_frames must be smaller than the window \(4 frames\)"),
        (Keyframes(context_frames=9), "Keyframes.context_frames must be smaller than the window"),
        (Autoregressive(window=3, context_frames=3),
         r"context_frames must be smaller than the window \(3 frames\)"),
        (Sliding(stride=5), r"Sliding.stride must be in \[1, window=4\]"),
        (Sliding(window=2, stride=3), r"Sliding.stride must be in \[1, window=2\]"),
        (Sliding(window=5), r"Sliding.window must be <= the model's window \(4 frames\), got 5"),
        (SharedNoise(window=5), r"SharedNoise.window must be <= the model's window"),
        (Keyframes(window=6), r"Keyframes.window must be <= the model's window"),
    ],
    ids=repr,
)
def test_resolve_refuses_what_the_model_cannot_do(pipe, strategy, match):
    with pytest.raises(ValueError, match=match):
        strategy.resolve(pipe.spec)


@pytest.mark.parametrize("strategy", [Autoregressive(), Keyframes(),
                                      Autoregressive(noise=SharedNoise())], ids=repr)
def test_context_strategies_need_a_context_model(lv_nocontext_dir, strategy):
    spec = vdengine.load(lv_nocontext_dir, device="cpu").spec
    assert spec.context is False
    with pytest.raises(ValueError, match=rf"long_video='{strategy.name}' conditions on known "
                                         "frames, but model .* has no context conditioning"):
        strategy.resolve(spec)
    # the same through generate, by object and by text
    for long_video in (strategy, strategy.label):
        with pytest.raises(ValueError, match="no context conditioning"):
            vdengine.generate(lv_nocontext_dir, num_frames=20, steps=2, device="cpu",
                              progress=False, long_video=long_video)


# ---------------------------------------------------------------- through generate(), early
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"long_video": "zigzag"}, ValueError, "long_video: unknown strategy 'zigzag'"),
        ({"long_video": 3}, TypeError, "long_video"),
        ({"long_video": "autoregressive(context_frames=4)"}, ValueError,
         "Autoregressive.context_frames must be smaller than the window"),
        ({"long_video": Autoregressive(context_frames=4)}, ValueError,
         "Autoregressive.context_frames must be smaller than the window"),
        ({"long_video": "sliding(stride=5)"}, ValueError, "Sliding.stride"),
        ({"long_video": Sliding(window=5)}, ValueError, "Sliding.window"),
        ({"long_video": "sliding(blend=gaussian)"}, ValueError, "Sliding.blend"),
        ({"long_video": "sliding", "latents": 0}, ValueError, "latents= is for one window"),
        ({"long_video": "sliding", "output_type": "pt"}, ValueError, "output_type must be 'np'"),
        # the removed keywords are not accepted (and not silently ignored)
        ({"long_video": "sliding", "stride": 2}, ValueError, "stride"),
        ({"long_video": "autoregressive", "context_frames": 1}, ValueError, "context_frames"),
        ({"stride": 2}, ValueError, "stride"),
    ],
)
def test_bad_requests_fail_before_sampling(lv_model_dir, tmp_path, monkeypatch, kwargs, error,
                                           match):
    pipe = vdengine.load(lv_model_dir, device="cpu")

    def never(*args, **kw):
        raise AssertionError("sampled before the request was checked")

    monkeypatch.setattr(pipe.model, "forward", never)
    with pytest.raises(error, match=match):
        pipe.generate(num_frames=20, steps=2, progress=False, output=None, **kwargs)
    if "output_type" not in kwargs:  # (output= needs frames)
        with pytest.raises(error, match=match):
            pipe.generate(num_frames=20, steps=2, progress=False, output=tmp_path / "v.mp4",
                          **kwargs)
    assert not list(tmp_path.iterdir())


def test_too_long_without_a_strategy_still_fails(lv_model_dir):
    with pytest.raises(ValueError, match="exceeds model .* window of 4 frames; long videos "
                                         "need long_video="):
        vdengine.generate(lv_model_dir, num_frames=5, device="cpu", progress=False)


@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("strategy", ["autoregressive", "shared_noise", "sliding", "keyframes"])
def test_shorter_than_the_window_works(lv_model_dir, strategy, n):
    video = vdengine.generate(lv_model_dir, num_frames=n, steps=2, device="cpu", progress=False,
                              long_video=strategy)
    assert video.frames.shape == (1, n, 16, 16, 3)



def test_noise_is_not_a_text_setting():
    # Shared noise is spelled "+shared_noise(...)" in text; a noise= setting must not vanish.
    with pytest.raises(ValueError, match="no setting 'noise'"):
        as_strategy("sliding(noise=0.5)")

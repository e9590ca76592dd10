"""The seed families: each network against a straightforward reference, the sampling loops'
structure (which network runs how often on which frames), determinism, loading and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from _families import live_family_model

from vdengine.models.families import (
    count_evaluations,
    family_of,
    load_family,
    load_family_model,
    save_family,
)
from vdengine.models.imageunet import ImageUNet, RowTables, UNetConfig, row_coords
from vdengine.models.videofusion import VideoFusionConfig
from vdengine.models.vidm import VIDMConfig, sample_frames


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------- ImageUNet
def test_row_coords_share_one_row_per_distinct_pair():
    t, n = row_coords(torch.tensor([7.0]), 0.5, 6, "cpu")
    assert t.tolist() == [7.0] and n.tolist() == [0.5]
    # guidance halves repeat the B videos' rows: period B
    t, n = row_coords(torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0, 3.0]), torch.tensor([0.0] * 6), 6,
                      "cpu")
    assert t.tolist() == [1.0, 2.0, 3.0] and n.tolist() == [0.0] * 3
    t, n = row_coords(5.0, torch.tensor([1.0, 2.0, 1.0, 2.0]), 4, "cpu")
    assert t.tolist() == [5.0, 5.0] and n.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match=r"t must be a scalar, \[1\] or \[B=4\]"):
        row_coords(torch.zeros(3), 0.0, 4, "cpu")


def test_row_tables_grid_holds_each_rows_t_and_n():
    tables = RowTables(torch.tensor([0.0, 999.0]), torch.tensor([-1.0, 0.25]), 1000)
    g = tables.grid(3, 5)
    assert g.shape == (2, 3, 5, 4)
    assert torch.allclose(g[0, ..., 0], torch.tensor(-1.0)) and torch.allclose(
        g[1, ..., 0], torch.tensor(1.0))
    assert torch.allclose(g[1, ..., 1], torch.tensor(0.25))
    assert torch.allclose(g[0, :, 0, 3], torch.linspace(-1, 1, 5)[0].expand(3))
    assert torch.allclose(g[0, 2, :, 2], torch.tensor(1.0))


@pytest.mark.parametrize("reference", [False, True])
def test_image_unet_fused_matches_reference_ops(reference):
    torch.manual_seed(0)
    net = ImageUNet(UNetConfig(base_channels=16, channel_mult=(1, 2), num_groups=4,
                               class_embed_dim=8), 5, 3, num_classes=3,
                    reference_channels=3 if reference else 0).eval()
    for p in net.parameters():
        if p.dim() > 1 and not p.any():
            torch.nn.init.normal_(p, 0, 0.05)
    x, ref = _randn(4, 5, 16, 16), (_randn(4, 3, 16, 16, seed=1) if reference else None)
    tables = RowTables(torch.tensor([300.0]), torch.tensor([0.0]), 1000)
    emb = net.class_embedding(torch.tensor([0, 1, 2, 3]), 4, "cpu")
    with torch.no_grad():
        fused = net.set_ops("fused")(x, tables, emb, ref)
        expect = net.set_ops("reference")(x, tables, emb, ref)
    assert fused.shape == (4, 3, 16, 16)
    torch.testing.assert_close(fused, expect, atol=1e-4, rtol=1e-4)
    assert expect.abs().mean() > 1e-3  # a live network: the comparison can fail


def test_image_unet_reference_argument_is_checked():
    net = ImageUNet(UNetConfig(base_channels=16, channel_mult=(1,), num_groups=4), 3, 3)
    tables = RowTables(torch.tensor([1.0]), torch.tensor([0.0]), 1000)
    with pytest.raises(ValueError, match="reference= is required"):
        net(_randn(1, 3, 16, 16), tables, None, _randn(1, 3, 16, 16))


# ----------------------------------------------------------------------------- VideoFusion
def test_videofusion_combines_base_and_residual_as_the_formula():
    model = live_family_model("videofusion", lam=0.3).set_ops("reference")
    cfg = model.config
    x, t, label = _randn(2, 4, 3, 16, 16), torch.tensor([600.0]), torch.tensor([1, 2])
    with torch.no_grad():
        out = model(x, t, label)
        tables = RowTables(t, torch.tensor([0.0]), 1000)
        base = model.base(x[:, 2], tables, model.base.class_embedding(label, 2, "cpu"))
        ab = cfg.noise_schedule().alphas_cumprod[600].item()
        residual = model.residual(x - math.sqrt(1 - ab) * math.sqrt(0.3) * base[:, None], t,
                                  label)
    expect = math.sqrt(0.3) * base[:, None] + math.sqrt(0.7) * residual
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)
    assert base.abs().mean() > 1e-3 and residual.abs().mean() > 1e-3


def test_videofusion_base_sees_only_the_middle_frame():
    model = live_family_model("videofusion")
    x = _randn(1, 4, 3, 16, 16)
    y = x.clone()
    y[:, 0] += 1.0  # not the middle frame (2)
    with torch.no_grad():
        b1, r1 = model.parts(x, 500.0)
        b2, r2 = model.parts(y, 500.0)
        y[:, 2] += 1.0
        b3, _ = model.parts(y, 500.0)
    torch.testing.assert_close(b1, b2)
    assert not torch.allclose(r1, r2)
    assert not torch.allclose(b1, b3)


def test_videofusion_fused_matches_reference():
    model = live_family_model("videofusion")
    x = _randn(3, 4, 3, 16, 16)
    with torch.no_grad():
        fused = model.set_ops("fused")(x, torch.tensor([250.0]), torch.tensor([0, 1, 4]))
        ref = model.set_ops("reference")(x, torch.tensor([250.0]), torch.tensor([0, 1, 4]))
    torch.testing.assert_close(fused, ref, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    return {f: str(save_family(live_family_model(f), tmp_path_factory.mktemp(f)))
            for f in ("vidm", "videofusion")}


@pytest.mark.parametrize("guided", [False, True])
def test_videofusion_sampling_runs_the_base_once_per_step_on_one_frame(family_dirs, guided):
    pipe = load_family(family_dirs["videofusion"])
    kw = {"guidance_scale": 3.0, "label": 1} if guided else {}
    rows = 3 * (2 if guided else 1)
    with count_evaluations(pipe.model.networks()) as calls:
        video = pipe.generate(num_frames=4, steps=5, batch_size=3, progress=False, **kw)
    assert video.frames.shape == (3, 4, 16, 16, 3)
    assert calls["base"].forwards == 5
    assert calls["base"].shapes == [(rows, 3, 16, 16)] * 5  # one frame per video (and half)
    assert calls["residual"].forwards == 5
    assert calls["residual"].shapes == [(rows, 4, 3, 16, 16)] * 5
    # per video and step: 1 base frame evaluation, F residual ones
    assert calls["base"].frame_evals == 5 * rows and calls["residual"].frame_evals == 20 * rows


def test_videofusion_initial_noise_is_decomposed_and_long_videos_share_the_base(family_dirs):
    pipe = load_family(family_dirs["videofusion"])
    gen = torch.Generator().manual_seed(3)
    noise = pipe._initial_noise(None, 64, 4, gen)  # [64, 4, 3, 16, 16]
    flat = noise.reshape(64, 4, -1)
    corr = torch.corrcoef(torch.stack([flat[:, 0].reshape(-1), flat[:, 3].reshape(-1)]))[0, 1]
    assert abs(corr - pipe.model.config.lam) < 0.05  # corr(ε_i, ε_j) = λ
    assert abs(noise.std() - 1.0) < 0.02
    assert pipe.model.default_long_video.lam == pipe.model.config.lam
    with count_evaluations(pipe.model.networks()) as calls:
        video = pipe.generate(num_frames=10, steps=2, batch_size=2, progress=False)
    assert video.frames.shape[:2] == (2, 10)
    assert calls["residual"].forwards == 2 * 3  # three back-to-back windows of 4 frames


# ------------------------------------------------------------------------------------ VIDM
def test_vidm_content_generator_concatenates_the_truncation_constant():
    model = live_family_model("vidm").set_ops("reference")
    content = model.content
    x, t = _randn(2, 1, 3, 16, 16), torch.tensor([400.0])
    with torch.no_grad():
        out = content(x, t, torch.tensor([0, 3]))
        tables = RowTables(t, torch.tensor([-1.0]), 1000)
        inp = torch.cat([x[:, 0], content.truncation.expand(2, -1, -1, -1)], dim=1)
        expect = content.unet(inp, tables, content.unet.class_embedding(torch.tensor([0, 3]), 2,
                                                                          "cpu"))
        content.truncation.add_(1.0)
        moved = content(x, t, torch.tensor([0, 3]))
    torch.testing.assert_close(out, expect[:, None])
    assert content.truncation.shape == (1, 3, 16, 16)
    assert not torch.allclose(out, moved)  # the constant reaches the output


def test_vidm_motion_generator_matches_its_parts():
    model = live_family_model("vidm").set_ops("reference")
    motion, cfg = model.motion, model.config
    x, first, prev = _randn(2, 1, 3, 16, 16), _randn(2, 3, 16, 16, seed=1), _randn(
        2, 3, 16, 16, seed=2)
    t = torch.tensor([100.0])
    with torch.no_grad():
        out = motion(x, t, None, first_frame=first, prev_frame=prev, frame_index=2)
        z = motion.motion_encoder(first, prev)
        assert z.shape == (2, cfg.motion_channels, 16, 16)
        tables = RowTables(t, torch.tensor([2 * 2 / 3 - 1.0]), 1000)
        expect = motion.unet(torch.cat([x[:, 0], z], 1), tables,
                             motion.unet.class_embedding(None, 2, "cpu"), reference=first)
        other_n = motion(x, t, None, first_frame=first, prev_frame=prev, frame_index=3)
        other_prev = motion(x, t, None, first_frame=first, prev_frame=first, frame_index=2)
        other_first = motion(x, t, None, first_frame=prev, prev_frame=prev, frame_index=2)
    torch.testing.assert_close(out, expect[:, None])
    for other in (other_n, other_prev, other_first):
        assert not torch.allclose(out, other, atol=1e-5)


def test_vidm_frame_coordinate_is_clamped_beyond_the_training_length():
    cfg = VIDMConfig(num_frames=5)
    assert cfg.frame_coord(torch.tensor([0, 2, 4, 9])).tolist() == [-1.0, 0.0, 1.0, 1.0]


def test_vidm_fused_matches_reference():
    model = live_family_model("vidm")
    x, f = _randn(2, 1, 3, 16, 16), _randn(2, 3, 16, 16, seed=4)
    kw = {"first_frame": f, "prev_frame": f.flip(0), "frame_index": torch.tensor([1, 3])}
    with torch.no_grad():
        a = model.set_ops("fused").motion(x, torch.tensor([10.0]), **kw)
        b = model.set_ops("reference").motion(x, torch.tensor([10.0]), **kw)
        c = model.set_ops("fused").content(x, torch.tensor([10.0]))
        d = model.set_ops("reference").content(x, torch.tensor([10.0]))
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(c, d, atol=1e-4, rtol=1e-4)


class _Spy:
    """Records the keyword conditioning of every call of a generator (a forward pre-hook)."""

    def __init__(self, module):
        self.calls = []
        self.handle = module.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.calls.append((tuple(args[0].shape), {k: v for k, v in kwargs.items()}))


@pytest.mark.parametrize("guided, sampler", [(False, "ddim"), (True, "ddim"),
                                             (True, "dpmpp_2m")])
def test_vidm_sampling_loop_structure(family_dirs, guided, sampler):
    pipe = load_family(family_dirs["vidm"])
    model = pipe.model
    steps, frames, b = 3, 5, 2
    rows = b * (2 if guided else 1)
    kw = {"guidance_scale": 2.0, "label": [1, 2]} if guided else {}
    content, motion = _Spy(model.content), _Spy(model.motion)
    with count_evaluations(model.networks()) as calls:
        video = pipe.generate(num_frames=frames, steps=steps, batch_size=b, progress=False,
                              output_type="pt", sampler=sampler, **kw)
    content.handle.remove()
    motion.handle.remove()
    assert video.shape == (b, frames, 3, 16, 16)
    # content generator: only frame 0, once per step, all videos (and halves) in one forward
    assert calls["content"].forwards == steps
    assert [s for s, _ in content.calls] == [(rows, 1, 3, 16, 16)] * steps
    # motion generator: once per step for each frame n >= 1, batched across videos
    assert calls["motion"].forwards == steps * (frames - 1)
    assert [s for s, _ in motion.calls] == [(rows, 1, 3, 16, 16)] * (steps * (frames - 1))
    frame_x = video * 2 - 1  # back to [−1, 1]
    for i, (_, kwargs) in enumerate(motion.calls):
        n = 1 + i // steps
        assert kwargs["frame_index"].tolist() == [n] * rows
        torch.testing.assert_close(kwargs["first_frame"][:b], frame_x[:, 0], atol=1e-5,
                                   rtol=0)
        torch.testing.assert_close(kwargs["prev_frame"][:b], frame_x[:, n - 1], atol=1e-5,
                                   rtol=0)
    assert pipe.last_stats["content"].forwards == steps
    assert pipe.last_stats["motion"].rows == [rows] * (steps * (frames - 1))


def test_vidm_posgn_tables_have_one_row_per_step(family_dirs):
    model = load_family_model(family_dirs["vidm"])
    seen = []
    orig = RowTables.__init__

    def spy(self, t_rows, n_coord, T):
        orig(self, t_rows, n_coord, T)
        seen.append(self.rows)

    RowTables.__init__ = spy
    try:
        gen = torch.Generator().manual_seed(0)
        cond, uncond = {"label": torch.tensor([0, 1, 2])}, {"label": torch.full((3,), 4)}
        list(sample_frames(model, num_frames=3, batch_size=3, steps=2, sampler="ddim",
                           sampler_options={}, cond=cond, uncond=uncond, guidance_scale=2.0,
                           generator=gen, device=torch.device("cpu"), dtype=torch.float32))
    finally:
        RowTables.__init__ = orig
    assert seen == [1] * 6  # 3 frames × 2 steps, tables shared over 6 rows each


def test_vidm_frames_are_generated_lazily(family_dirs):
    model = load_family_model(family_dirs["vidm"])
    gen = torch.Generator().manual_seed(0)
    with count_evaluations(model.networks()) as calls:
        it = sample_frames(model, num_frames=100, batch_size=1, steps=2, sampler="ddim",
                           sampler_options={}, cond={}, uncond=None, guidance_scale=None,
                           generator=gen, device=torch.device("cpu"), dtype=torch.float32)
        next(it)
        next(it)
        assert calls["motion"].forwards == 2  # only frame 1 so far
        it.close()


def test_vidm_long_video_streams_to_a_file(family_dirs, tmp_path):
    pipe = load_family(family_dirs["vidm"])
    path = pipe.generate(num_frames=11, steps=2, batch_size=2, seed=5, progress=False,
                         output=tmp_path / "long.gif")
    from PIL import Image

    with Image.open(path) as im:
        assert im.n_frames == 11
    again = pipe.generate(num_frames=11, steps=2, batch_size=2, seed=5, progress=False)
    assert again.frames.shape == (2, 11, 16, 16, 3)


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("family", ["vidm", "videofusion"])
def test_same_seed_same_video(family_dirs, family):
    pipe = load_family(family_dirs[family])
    kw = {"num_frames": 4, "steps": 3, "batch_size": 2, "progress": False}
    a = pipe.generate(seed=11, **kw).frames
    b = pipe.generate(seed=11, **kw).frames
    c = pipe.generate(seed=12, **kw).frames
    assert (a == b).all()
    assert (a != c).any()
    ddpm_a = pipe.generate(seed=11, sampler="ddpm", **kw).frames
    ddpm_b = pipe.generate(generator=torch.Generator().manual_seed(11), sampler="ddpm",
                           **kw).frames
    assert (ddpm_a == ddpm_b).all()


@pytest.mark.parametrize("family", ["vidm", "videofusion"])
def test_labels_and_guidance_change_the_video(family_dirs, family):
    pipe = load_family(family_dirs[family])
    kw = {"num_frames": 3, "steps": 2, "batch_size": 1, "progress": False, "seed": 0,
          "output_type": "pt"}
    plain = pipe.generate(**kw)
    labelled = pipe.generate(label=2, **kw)
    guided = pipe.generate(label=2, guidance_scale=4.0, **kw)
    assert not torch.allclose(plain, labelled) and not torch.allclose(labelled, guided)


# ------------------------------------------------------------------------ loading, errors
def test_save_load_round_trip(family_dirs, tmp_path):
    for family, d in family_dirs.items():
        assert family_of(d) == family
        model = load_family_model(d)
        again = load_family_model(save_family(model, tmp_path / family))
        for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
            assert k == k2 and torch.equal(v, v2)
        assert not any(p.requires_grad for p in model.parameters())


def test_family_of_videounet_dirs_and_non_dirs_is_none(tmp_path):
    from _models import live_tiny_model

    from vdengine.models import save_model

    assert family_of(save_model(live_tiny_model(), tmp_path / "unet")) is None
    assert family_of(tmp_path / "missing") is None
    assert family_of("default") is None


def test_loading_errors_are_one_line(family_dirs, tmp_path):
    from vdengine.models import load_model

    with pytest.raises(ValueError, match="family model, not a VideoUNet") as e:
        load_model(family_dirs["vidm"])
    assert "\n" not in str(e.value)
    d = save_family(live_family_model("videofusion"), tmp_path / "bad")
    text = (d / "config.json").read_text().replace('"videofusion"', '"sora"', 1)
    (d / "config.json").write_text(text)
    with pytest.raises(ValueError, match="unknown model family 'sora'"):
        family_of(d)
    d2 = save_family(live_family_model("vidm"), tmp_path / "bad2")
    small = save_family(live_family_model("vidm", motion_hidden=4), tmp_path / "small")
    (d2 / "model.safetensors").write_bytes((small / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="does not match its config"):
        load_family_model(d2)
    with pytest.raises(ValueError, match="not a VIDM or VideoFusion model directory"):
        from _models import live_tiny_model

        from vdengine.models import save_model

        load_family_model(save_model(live_tiny_model(), tmp_path / "unet"))


@pytest.mark.parametrize("bad, match", [
    ({"lam": 1.5}, r"lam \(λ\) must be in \[0, 1\]"),
    ({"residual": {"context": True}}, "unknown or fixed field"),
    ({"image_size": 20}, "not divisible"),
])
def test_videofusion_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        VideoFusionConfig(**bad)
    with pytest.raises(ValueError, match="family must be 'videofusion'"):
        VideoFusionConfig.from_dict({"family": "vidm"})


def test_vidm_config_errors():
    with pytest.raises(ValueError, match="num_frames must be >= 2"):
        VIDMConfig(num_frames=1)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['window'\]"):
        VIDMConfig.from_dict({"family": "vidm", "window": 3})


def test_bad_inputs_are_one_line_errors(family_dirs):
    vidm = load_family(family_dirs["vidm"])
    vf = load_family(family_dirs["videofusion"])
    motion, x = vidm.model.motion, torch.zeros(1, 1, 3, 16, 16)
    f = torch.zeros(1, 3, 16, 16)
    cases = [
        (lambda: vidm.generate(num_frames=0), ValueError, "num_frames must be >= 1"),
        (lambda: vidm.generate(long_video="sliding"), ValueError, "does not apply to VIDM"),
        (lambda: vidm.generate(latents=torch.zeros(1)), ValueError, "does not apply to VIDM"),
        (lambda: vidm.generate(sampler="heun"), ValueError, "sampler must be one of"),
        (lambda: vidm.generate(colour=3), ValueError, "unexpected argument"),
        (lambda: vidm.generate(label=9), ValueError, r"label must be in \[0, 4\)"),
        (lambda: vidm.generate(guidance_scale=2.0), ValueError, "needs label="),
        (lambda: vidm.generate(output_type="video"), ValueError, "output_type must be"),
        (lambda: motion(x, 1.0, first_frame=f, prev_frame=f), ValueError, "needs frame_index"),
        (lambda: motion(x, 1.0, first_frame=f, prev_frame=f, frame_index=0), ValueError,
         "frame_index must be >= 1"),
        (lambda: motion(x, 1.0, prev_frame=f, frame_index=1), ValueError, "needs first_frame"),
        (lambda: motion(x, 1.0, first_frame=f[:, :2], prev_frame=f, frame_index=1), ValueError,
         "first_frame must be"),
        (lambda: motion(x, 1.0, first_frame=f, prev_frame=f, frame_index=1.5), TypeError,
         "frame_index must be an int"),
        (lambda: motion(torch.zeros(1, 2, 3, 16, 16), 1.0), ValueError, "one frame per video"),
        (lambda: vidm.model.content(torch.zeros(1, 1, 3, 8, 8), 1.0), ValueError,
         r"x must be \[B, 1, 3, 16, 16\]"),
        (lambda: vf.model(torch.zeros(1, 5, 3, 16, 16), 1.0), ValueError, "more than the model"),
        (lambda: vf.model(torch.zeros(1, 4, 3, 8, 8), 1.0), ValueError, "x must be"),
        (lambda: vf.generate(steps=0), ValueError, "steps must be >= 1"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc, match=match) as e:
            fn()
        assert "\n" not in str(e.value), str(e.value)


# ------------------------------------------------------------------------- shipped models
@pytest.mark.parametrize("family", ["vidm", "videofusion"])
def test_shipped_family_models(family):
    from vdengine.models.families import model_summaries
    from vdengine.models.loading import WEIGHTS_DIR, available_models

    assert family in available_models()
    files = list((WEIGHTS_DIR / family).iterdir())
    assert {f.name for f in files} == {"config.json", "model.safetensors", "training.json"}
    assert sum(f.stat().st_size for f in files) <= 10 * 2**20  # the shipping limit
    summary = model_summaries()[family]
    assert summary["family"] == family and summary["steps"] > 0
    model = load_family_model(family)
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert model_summaries()["default"]["family"] == "videoldm"
    video = load_family(family).generate(num_frames=2, steps=1, progress=False)
    assert video.frames.shape == (1, 2, 32, 32, 3)

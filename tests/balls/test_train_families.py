"""Training the seed families: the objectives, resumable runs and the exported model."""

from __future__ import annotations

import json

import pytest
import torch
from _families import live_family_model

from vdengine.balls.data import generate_clips, to_model_range
from vdengine.balls.train_families import main, videofusion_loss, vidm_loss
from vdengine.models.families import load_family, load_family_model


def _clips(frames: int, batch: int = 3):
    x, labels = generate_clips(batch, frames, 16, 0)
    return to_model_range(x), torch.from_numpy(labels)


def _abar(model):
    return model.config.noise_schedule().alphas_cumprod.float()


def test_videofusion_base_learns_from_the_middle_frame_only():
    """The paper's stop-gradient: the base generator's gradient equals that of the ε̂ loss
    restricted to the middle frame."""
    model = live_family_model("videofusion").set_ops("reference").train()
    clips, labels = _clips(4)
    loss, _ = videofusion_loss(model, clips, labels, _abar(model),
                               torch.Generator().manual_seed(1), label_dropout=0.0)
    loss.backward()
    grads = [p.grad.clone() for p in model.base.parameters()]
    model.zero_grad()
    # the same draws, the loss of the middle frame alone (scaled as its share of the mean)
    from vdengine.balls.train_families import _noised
    from vdengine.models.videofusion import decomposed_noise

    gen = torch.Generator().manual_seed(1)
    torch.rand(3, generator=gen)  # the label-dropout draw
    noise, _, _ = decomposed_noise(3, 4, (3, 16, 16), model.config.lam, gen)
    xt, t, eps = _noised(clips, _abar(model), gen, noise=noise)
    b_hat, r_hat = model.parts(xt, t, labels)
    mid = model.combine(b_hat, r_hat[:, 2:3])
    ((mid - eps[:, 2:3]) ** 2).sum().div(eps.numel()).backward()
    for g, p in zip(grads, model.base.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-6, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in grads)


def test_videofusion_part_loss_adds_the_parts():
    model = live_family_model("videofusion").set_ops("reference").train()
    clips, labels = _clips(4)
    plain, parts = videofusion_loss(model, clips, labels, _abar(model),
                                    torch.Generator().manual_seed(2))
    both, _ = videofusion_loss(model, clips, labels, _abar(model),
                               torch.Generator().manual_seed(2), part_loss=0.5)
    expect = plain + 0.5 * (parts["base"] + parts["residual"])
    torch.testing.assert_close(both.detach(), expect.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("loss", ["mse", "charbonnier"])
def test_vidm_loss_trains_both_generators(loss):
    model = live_family_model("vidm").set_ops("reference").train()
    clips, labels = _clips(4)
    total, parts = vidm_loss(model, clips, labels, _abar(model), torch.Generator().manual_seed(0),
                             loss=loss)
    total.backward()
    assert set(parts) == {"content", "motion"}
    assert abs(float(total.detach()) - parts["content"] - parts["motion"]) < 1e-5
    for net in (model.content, model.motion, model.motion.motion_encoder):
        assert all(p.grad is not None for p in net.parameters())
    assert model.content.truncation.grad.abs().sum() > 0


def test_charbonnier_is_the_root_of_squared_error_plus_eta():
    from vdengine.balls.train_families import _penalty

    d = torch.tensor([0.0, 3.0, -4.0])
    assert torch.isclose(_penalty(d, "charbonnier", 1.0),
                         torch.tensor([1.0, 10**0.5, 17**0.5]).mean())
    assert torch.isclose(_penalty(d, "mse", 1.0), torch.tensor(25 / 3))


@pytest.mark.parametrize("family", ["vidm", "videofusion"])
def test_training_resumes_and_exports_a_loadable_model(tmp_path, family, capsys):
    run = tmp_path / "run"
    args = ["--family", family, "--run-dir", str(run), "--preset", "tiny", "--batch-size", "2",
            "--threads", "1", "--log-every", "1", "--quiet"]
    assert main([*args, "--steps", "2"]) == 0
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 2
    assert main([*args, "--steps", "3"]) == 0
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3 and len(state["commands"]) == 2
    meta = json.loads((run / "model" / "training.json").read_text())
    assert meta["family"] == family and meta["steps"] == 3 and meta["weights"] == "EMA"
    model = load_family_model(run / "model")
    assert meta["parameters"] == sum(p.numel() for p in model.parameters())
    video = load_family(run / "model").generate(num_frames=3, steps=2, progress=False)
    assert video.frames.shape == (1, 3, 16, 16, 3)
    other = "vidm" if family == "videofusion" else "videofusion"
    assert main([*args[:1], other, *args[2:], "--steps", "4"]) == 2
    assert "holds a" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["vidm", "videofusion"])
def test_cpu_time_limit_is_a_total_over_resumes(tmp_path, family, fake_cpu_clock):
    """--cpu-time-limit (30 s of process CPU time a step here) is a total over resumed runs and
    lands in the state and the exported training.json."""
    from vdengine.balls import train_families

    fake_cpu_clock(train_families, f"{family}_loss", 30.0)
    run = tmp_path / "run"
    args = ["--family", family, "--run-dir", str(run), "--preset", "tiny", "--batch-size", "2",
            "--threads", "1", "--log-every", "1", "--quiet"]
    assert main([*args, "--cpu-time-limit", "1", "--no-export"]) == 0  # 60 s: 2 steps
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and state["cpu_time"] == pytest.approx(60.0)
    assert main([*args, "--cpu-time-limit", "1.5"]) == 0  # resumed: 30 s more, one step
    meta = json.loads((run / "model" / "training.json").read_text())
    assert meta["steps"] == 3 and meta["cpu_time_s"] == pytest.approx(90.0)

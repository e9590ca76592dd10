"""Training recipe: smoke run, checkpoint/resume (exact), export, masks, LR schedule."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from vdengine.balls import train
from vdengine.models import VideoUNet, load_model, tiny_config

TINY = [
    "--preset",
    "tiny",
    "--window",
    "2",
    "--batch-size",
    "2",
    "--log-every",
    "1",
    "--quiet",
    "--threads",
    "2",
]


def _run(tmp, *extra):
    return train.main(["--run-dir", str(tmp), *TINY, *extra])


def test_smoke_resume_export(tmp_path):
    """2 steps, stop, resume to 3 steps == 3 steps straight; then export the EMA weights."""
    opts = ("--lr-schedule", "constant", "--warmup", "1")  # LR independent of --steps
    run, straight = tmp_path / "run", tmp_path / "straight"
    assert _run(run, "--steps", "2", "--ckpt-every", "1", "--no-export", *opts) == 0
    ck = run / "checkpoint"
    assert {p.name for p in ck.iterdir()} == {
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
        "state.json",
    }
    state = json.loads((ck / "state.json").read_text())
    assert state["step"] == 2 and len(state["losses"]) == 2
    assert all(math.isfinite(v) and v > 0 for _, v in state["losses"])

    assert _run(run, "--steps", "3", *opts) == 0  # resumes at 2, continues to 3, exports
    state = json.loads((ck / "state.json").read_text())
    assert state["step"] == 3 and len(state["commands"]) == 2
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] and lines[0]["steps_per_s"] > 0
    assert (run / "model" / "model.safetensors").is_file()  # the end-of-run export

    # Resuming is exact: the same weights, EMA included, as an uninterrupted run.
    assert _run(straight, "--steps", "3", "--no-export", *opts) == 0
    for name in ("model.safetensors", "ema.safetensors"):
        sa = load_file(str(straight / "checkpoint" / name))
        sb = load_file(str(ck / name))
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)

    out = tmp_path / "exported"
    assert _run(run, "--export-only", "--export", str(out)) == 0
    model = load_model(out)
    assert model.config == tiny_config(window=2)
    assert model.metadata["steps"] == 3 and "hardware" in model.metadata
    assert model.metadata["final_loss_ema"] > 0 and model.metadata["wall_time_s"] >= 0
    ema = load_file(str(ck / "ema.safetensors"))
    torch.testing.assert_close(model.state_dict()["conv_in.weight"], ema["conv_in.weight"])


def test_export_only_without_checkpoint_is_an_error(tmp_path, capsys):
    assert _run(tmp_path / "none", "--export-only") == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_context_masks():
    g = torch.Generator().manual_seed(0)
    m = train.sample_context_masks(2000, 16, train.DEFAULT_MASK_PROBS, g)
    known = m.sum(1)
    assert set(known.unique().tolist()) == {0.0, 1.0, 2.0, 4.0}
    rows = {tuple(r.tolist()) for r in m}
    keyframes = tuple([1.0] + [0.0] * 14 + [1.0])
    assert keyframes in rows
    for r in rows:  # leading S frames, or keyframes
        s = int(sum(r))
        assert r == keyframes or r == tuple([1.0] * s + [0.0] * (16 - s))
    assert 0.3 < (known == 0).float().mean() < 0.5
    with pytest.raises(ValueError):
        train.sample_context_masks(2, 4, (1.0, 0.0), g)


@pytest.mark.parametrize("loss", ["mse", "charbonnier"])
@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
def test_loss_finite_and_differentiable(loss, pred):
    cfg = tiny_config(prediction_type=pred)
    model = VideoUNet(cfg).set_ops("reference")
    x0 = torch.rand(2, cfg.window, 3, 16, 16) * 2 - 1
    g = torch.Generator().manual_seed(0)
    val = train.diffusion_loss(
        model, x0, torch.tensor([1, 3]), train.alphas_cumprod(cfg), g, loss=loss
    )
    val.backward()
    assert torch.isfinite(val) and model.conv_out.weight.grad.abs().sum() > 0


def test_lr_schedule():
    args = argparse.Namespace(lr=1e-3, warmup=10, lr_schedule="cosine", min_lr_ratio=0.1)
    assert train.lr_at(args, 0, 0.0) == pytest.approx(1e-4)
    assert train.lr_at(args, 9, 0.0) == pytest.approx(1e-3)
    assert train.lr_at(args, 50, 0.5) == pytest.approx(0.55e-3)
    assert train.lr_at(args, 99, 1.0) == pytest.approx(1e-4)
    args.lr_schedule = "constant"
    assert train.lr_at(args, 99, 1.0) == pytest.approx(1e-3)


def test_cli_mounts_train():
    parser = train.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--run-dir", "x", "--time-limit", "45", "--channel-mult", "1,2"])
    assert args.time_limit == 45 and args.channel_mult == (1, 2)
    cfg = train.model_config_from_args(args)  # temporal levels beyond the new depth are dropped
    assert cfg.channel_mult == (1, 2) and cfg.attention_levels == (1,)

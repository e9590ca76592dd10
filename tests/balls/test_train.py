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


def test_lr_schedule_wsd_and_cap():
    args = argparse.Namespace(
        lr=1e-3, warmup=1, lr_schedule="wsd", min_lr_ratio=0.1, decay_fraction=0.2
    )
    assert train.lr_base(args, 0.5) == pytest.approx(1e-3)  # stable phase
    assert train.lr_base(args, 0.9) == pytest.approx(0.55e-3)  # half-way through the decay
    assert train.lr_base(args, 1.0) == pytest.approx(1e-4)
    assert train.lr_base(args, 0.5, cap=2e-4) == pytest.approx(2e-4)  # held at the cap
    assert train.lr_base(args, 1.0, cap=2e-4) == pytest.approx(1e-4)  # then decays below it
    args.lr_schedule = "nope"
    with pytest.raises(ValueError, match="lr schedule"):
        train.lr_base(args, 0.5)


def _log(run):
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("restart", [False, True])
def test_resume_with_longer_horizon_keeps_lr_continuous(tmp_path, restart):
    """A cosine run of 4 steps extended to 6 on resume: the LR does not jump back up (unless
    --lr-restart asks for it)."""
    run = tmp_path / "run"
    opts = ("--warmup", "1", "--no-export")
    assert _run(run, "--steps", "4", *opts) == 0
    assert _run(run, "--steps", "6", *opts, *(["--lr-restart"] if restart else [])) == 0
    lrs = [r["lr"] for r in _log(run)]
    assert lrs[:4] == sorted(lrs[:4], reverse=True)  # the first cosine decays
    if restart:
        assert lrs[4] > 1.3 * lrs[3]  # the warm restart the cap prevents
    else:
        assert lrs[4] == pytest.approx(lrs[3])  # held where the first run left off
        assert lrs[5] <= lrs[4] * (1 + 1e-9)


def test_resume_lr_cap_from_an_old_checkpoint(tmp_path):
    """Checkpoints from before lr_base was recorded: the cap is the last logged LR."""
    (tmp_path / "log.jsonl").write_text('{"step": 20, "lr": 3e-4}\n{"step": 40, "lr": 2e-4}\n')
    assert train.resume_lr_cap({"step": 40}, tmp_path) == pytest.approx(2e-4)
    assert train.resume_lr_cap({"step": 40, "lr_base": 1e-4}, tmp_path) == pytest.approx(1e-4)
    assert train.resume_lr_cap({"step": 0}, tmp_path / "none") is None


def test_min_snr_weights_by_hand():
    abar = torch.tensor([0.5, 0.9, 0.1])  # SNR 1, 9, 1/9
    v = train.min_snr_weights(abar, "v_prediction", gamma=5.0)
    eps = train.min_snr_weights(abar, "epsilon", gamma=5.0)
    torch.testing.assert_close(v, torch.tensor([1 / 2, 5 / 10, (1 / 9) / (10 / 9)]))
    torch.testing.assert_close(eps, torch.tensor([1.0, 5 / 9, 1.0]))
    with pytest.raises(ValueError, match="gamma"):
        train.min_snr_weights(abar, "epsilon", gamma=0.0)


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
def test_min_snr_loss_is_the_weighted_loss(pred):
    """All videos share t (t_share = B): weighted loss = w(t) · unweighted loss, t by hand."""
    cfg = tiny_config(prediction_type=pred)
    model = VideoUNet(cfg).set_ops("reference")
    x0 = torch.rand(2, cfg.window, 3, 16, 16) * 2 - 1
    abar = train.alphas_cumprod(cfg)
    g = torch.Generator().manual_seed(3)
    t0 = torch.randint(0, cfg.num_train_timesteps, (1,), generator=g.clone_state())
    val, raw = train.diffusion_loss(
        model, x0, torch.tensor([1, 2]), abar, g, weighting="min-snr", snr_gamma=5.0,
        t_share=2, return_unweighted=True,
    )  # fmt: skip
    snr = float(abar[t0] / (1 - abar[t0]))
    w = min(snr, 5.0) / (snr if pred == "epsilon" else snr + 1)
    assert float(val.detach()) == pytest.approx(w * float(raw), rel=1e-5)


def test_t_share_tiles_timesteps():
    g = torch.Generator().manual_seed(0)
    t = train.sample_timesteps(8, 1000, 2, g)
    assert torch.equal(t[:4], t[4:]) and len(set(t[:4].tolist())) == 4
    assert VideoUNet.timestep_rows(t.float(), 8, "cpu").numel() == 4  # tables once per draw
    with pytest.raises(ValueError, match="t-share"):
        train.sample_timesteps(8, 1000, 3, g)


def test_resume_committed_run_with_new_options(tmp_path):
    """training/balls32 (written before these options existed) resumes with them: one step."""
    import shutil
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "training" / "balls32"
    run = tmp_path / "balls32"
    shutil.copytree(src, run)
    before = json.loads((run / "checkpoint" / "state.json").read_text())
    # Where the run left off: lr_base (the log's last lr may predate a stop between log lines).
    last_lr = before.get("lr_base", _log(run)[-1]["lr"])
    argv = ["--run-dir", str(run), "--steps", str(before["step"] + 1), "--batch-size", "2",
            "--lr-schedule", "constant", "--bf16", "--loss-weighting", "min-snr", "--t-share", "2",
            "--ema-decay", "0.9995", "--log-every", "1", "--no-export", "--quiet"]  # fmt: skip
    assert train.main(argv) == 0
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == before["step"] + 1 and state["args"]["loss_weighting"] == "min-snr"
    rec = _log(run)[-1]
    assert rec["step"] == state["step"] and rec["lr"] == pytest.approx(last_lr)  # no warm restart
    assert math.isfinite(rec["loss"]) and math.isfinite(rec["loss_unweighted"])


@pytest.mark.parametrize(("minutes", "saves"), [(1e-9, 3 + 1), (0, 1)])
def test_time_based_checkpoints(tmp_path, monkeypatch, minutes, saves):
    calls = []
    real = train.save_checkpoint
    monkeypatch.setattr(train, "save_checkpoint", lambda *a: calls.append(1) or real(*a))
    args = ("--steps", "3", "--ckpt-every", "0", "--ckpt-minutes", str(minutes), "--no-export")
    assert _run(tmp_path / "run", *args) == 0
    assert len(calls) == saves  # every step when due, plus the final save


def test_cpu_time_limit_is_a_total_over_resumes(tmp_path, fake_cpu_clock):
    """--cpu-time-limit counts the process's CPU time (30 s a step here), stores it in the state
    and the export, drives the LR schedule's progress and is a total over resumed runs."""
    fake_cpu_clock(train, "training_step", 30.0)
    run = tmp_path / "run"
    assert _run(run, "--cpu-time-limit", "1", "--warmup", "1", "--no-export") == 0  # 60 s
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and state["cpu_time"] == pytest.approx(60.0)
    log = _log(run)
    assert [r["cpu_time"] for r in log] == pytest.approx([30.0, 60.0])
    # Step 2 starts half-way through the budget: the cosine's midpoint.
    assert log[1]["lr"] == pytest.approx(5e-4 * (0.1 + 0.9 * 0.5))
    assert _run(run, "--cpu-time-limit", "1.5", "--warmup", "1") == 0  # 30 s more: one step
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3 and state["cpu_time"] == pytest.approx(90.0)
    meta = json.loads((run / "model" / "training.json").read_text())
    assert meta["cpu_time_s"] == pytest.approx(90.0) and meta["steps"] == 3
    assert _run(run, "--cpu-time-limit", "1.5", "--no-export") == 0  # budget spent: no step
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 3

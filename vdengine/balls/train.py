"""Train a VideoUNet on procedural bouncing balls (``python -m vdengine.balls.train`` / ``vdengine train``).

Recipe: uniform integer t (optionally shared by --t-share clips, which computes each PosGN table
once per draw), v-prediction (or ε) MSE (or VIDM's Charbonnier) loss, optionally Min-SNR-weighted,
AdamW, gradient clipping, linear warmup then a cosine, warmup-stable-decay or constant LR that
never rises on resume (capped where the run left off), EMA of the weights; optional bf16 autocast. Video LDM context
conditioning: every clip gets a random mask of known frames — none, the first 1, 2 or 4 frames
(continuation) or the first and last frame (keyframes/interpolation) — so one model generates and
continues videos; class labels (number of balls) are dropped to the null class 10% of the time for
classifier-free guidance. The model runs on the reference ops (pure PyTorch, autograd).

Run directory (``--run-dir``): ``checkpoint/`` (model.safetensors, ema.safetensors,
optimizer.safetensors with the RNG state, state.json with step/time/losses — no pickle anywhere),
``log.jsonl`` and, at the end, ``model/`` (the EMA weights as a loadable model directory). Re-running
the same command resumes from the checkpoint; ``--steps``, ``--time-limit`` (wall minutes) and
``--cpu-time-limit`` (CPU minutes of the training process) are totals over all resumed invocations. Checkpoints every --ckpt-every steps and --ckpt-minutes minutes; SIGTERM /
Ctrl-C save a checkpoint and export before exiting.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vdengine.balls.data import generate_clips, to_model_range
from vdengine.models import ModelConfig, VideoUNet, save_model
from vdengine.models.config import default_config, tiny_config
from vdengine.models.loading import check_state_dict, load_state

CKPT_DIR = "checkpoint"
EXPORT_DIR = "model"
# Context-mask kinds drawn per clip: S known leading frames (S = 0, 1, 2, 4) or keyframes.
MASK_KINDS = ("none", "first1", "first2", "first4", "keyframes")
DEFAULT_MASK_PROBS = (0.4, 0.15, 0.15, 0.15, 0.15)
LR_SCHEDULES = ("cosine", "wsd", "constant")


# ----------------------------------------------------------------------------------- arguments


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the training options to ``parser`` (used by ``vdengine train`` and ``__main__``)."""
    p = parser
    p.add_argument("--run-dir", required=True, help="checkpoints, logs and the exported model")
    m = p.add_argument_group("model (ignored when resuming: the run's config.json wins)")
    m.add_argument("--preset", choices=("default", "tiny"), default="default")
    m.add_argument("--config", help="a ModelConfig JSON file (overrides --preset)")
    m.add_argument("--name", help="model name written into the config")
    m.add_argument("--base-channels", type=int)
    m.add_argument("--channel-mult", type=_ints, help="e.g. 1,2,2")
    m.add_argument("--num-res-blocks", type=int)
    m.add_argument("--patch-size", type=int)
    m.add_argument("--image-size", type=int)
    m.add_argument("--window", type=int, help="frames per clip")
    m.add_argument("--prediction-type", choices=("epsilon", "v_prediction"))
    m.add_argument("--schedule", choices=("linear", "cosine"))
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=int, default=8, help="clips per step")
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument(
        "--min-lr-ratio", type=float, default=0.1, help="cosine floor as a fraction of lr"
    )
    t.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default="cosine",
        help="cosine: over the whole run; wsd: constant, then cosine over the last "
        "--decay-fraction; constant. On resume the LR never rises above where the run left off",
    )
    t.add_argument(
        "--decay-fraction", type=float, default=0.2, help="wsd: final fraction of the run that decays"
    )
    t.add_argument("--warmup", type=int, default=50, help="linear warmup steps")
    t.add_argument(
        "--lr-restart",
        action="store_true",
        help="on resume, follow the schedule even where it is above the LR the run left off at "
        "(a warm restart; by default the LR never rises on resume)",
    )
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--grad-clip", type=float, default=1.0)
    t.add_argument("--ema-decay", type=float, default=0.998)
    t.add_argument("--loss", choices=("mse", "charbonnier"), default="mse")
    t.add_argument("--charbonnier-eta", type=float, default=1e-3)
    t.add_argument(
        "--loss-weighting",
        choices=("uniform", "min-snr"),
        default="uniform",
        help="min-snr: Min-SNR-γ weights (Hang et al. 2023) in the prediction type's units",
    )
    t.add_argument("--snr-gamma", type=float, default=5.0, help="γ of --loss-weighting min-snr")
    t.add_argument(
        "--t-share",
        type=int,
        default=1,
        help="clips per drawn timestep (batch size must be a multiple): the PosGN tables are "
        "computed once per distinct t, so 2 halves their cost",
    )
    t.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast on the CPU (convs and matmuls)"
    )
    t.add_argument("--label-dropout", type=float, default=0.1)
    t.add_argument(
        "--mask-probs",
        type=_floats,
        default=DEFAULT_MASK_PROBS,
        help=f"probabilities of the context masks {','.join(MASK_KINDS)}",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    s = p.add_argument_group("stopping, logging, checkpoints")
    s.add_argument("--steps", type=int, help="total optimizer steps (over resumes)")
    s.add_argument("--time-limit", type=float, help="total training minutes (over resumes)")
    s.add_argument(
        "--cpu-time-limit",
        type=float,
        help="total CPU minutes of the training process (over resumes): a budget that does not "
        "depend on how busy a shared machine is",
    )
    s.add_argument("--log-every", type=int, default=20)
    s.add_argument("--ckpt-every", type=int, default=200, help="checkpoint every N steps")
    s.add_argument(
        "--ckpt-minutes", type=float, default=10.0, help="and at least every M minutes (0: off)"
    )
    s.add_argument("--export", help=f"export directory (default RUN_DIR/{EXPORT_DIR})")
    s.add_argument(
        "--export-only", action="store_true", help="export the checkpoint's EMA, no training"
    )
    s.add_argument("--no-export", action="store_true", help="do not export at the end")
    s.add_argument("--quiet", action="store_true")
    return p


def model_config_from_args(args) -> ModelConfig:
    if args.config:
        cfg = ModelConfig.from_json(Path(args.config))
    else:
        cfg = tiny_config() if args.preset == "tiny" else default_config()
    d = cfg.to_dict()
    for key in (
        "name",
        "base_channels",
        "channel_mult",
        "num_res_blocks",
        "patch_size",
        "image_size",
        "window",
        "prediction_type",
        "schedule",
    ):
        v = getattr(args, key, None)
        if v is not None:
            d[key] = v
    levels = len(d["channel_mult"])
    for key in ("attention_levels", "temporal_conv_levels"):
        d[key] = [lv for lv in d[key] if lv < levels]
    return ModelConfig.from_dict(d)


# ------------------------------------------------------------------------------------ pieces


def alphas_cumprod(cfg: ModelConfig) -> torch.Tensor:
    """ᾱ [T] (float64) of the config's schedule, exactly as vdengine.schedules samples with."""
    from vdengine.schedules import NoiseSchedule

    return NoiseSchedule(cfg.schedule, cfg.num_train_timesteps).alphas_cumprod


def sample_context_masks(
    batch: int, frames: int, probs, generator: torch.Generator
) -> torch.Tensor:
    """Random Video LDM context masks [B, F] (1 = known frame); kinds as MASK_KINDS."""
    pr = torch.tensor(probs, dtype=torch.float64)
    if pr.numel() != len(MASK_KINDS) or (pr < 0).any() or pr.sum() <= 0:
        raise ValueError(f"mask probabilities must be {len(MASK_KINDS)} non-negative numbers")
    kind = torch.multinomial(pr / pr.sum(), batch, replacement=True, generator=generator)
    mask = torch.zeros(batch, frames)
    for i, k in enumerate(kind.tolist()):
        name = MASK_KINDS[k]
        if name.startswith("first"):
            mask[i, : min(int(name[5:]), frames)] = 1
        elif name == "keyframes":
            mask[i, 0] = mask[i, frames - 1] = 1
    return mask


def min_snr_weights(
    abar_t: torch.Tensor, prediction_type: str, gamma: float = 5.0
) -> torch.Tensor:
    """Min-SNR-γ loss weights [B] (Hang et al. 2023) for timesteps with ᾱ = abar_t [B].

    The x0-space weight min(SNR, γ) expressed in the model's output units: an ε error costs SNR
    times the x0 error and a v error SNR + 1 times, so the weight is min(SNR, γ)/SNR (ε) or
    min(SNR, γ)/(SNR + 1) (v), with SNR = ᾱ/(1 − ᾱ) — diffusers' train scripts use the same."""
    if gamma <= 0:
        raise ValueError(f"snr gamma must be > 0, got {gamma}")
    abar_t = abar_t.double()
    snr = abar_t / (1 - abar_t)
    clipped = torch.clamp(snr, max=gamma)
    if prediction_type == "epsilon":
        return (clipped / snr).float()
    if prediction_type == "v_prediction":
        return (clipped / (snr + 1)).float()
    raise ValueError(f"prediction type must be epsilon or v_prediction, got {prediction_type!r}")


def sample_timesteps(
    batch: int, num_train_timesteps: int, share: int, generator: torch.Generator
) -> torch.Tensor:
    """Uniform integer t [B]: B / share draws, tiled (video b uses draw b % (B / share)), which is
    the period VideoUNet.timestep_rows detects, so PosGN tables are computed once per draw."""
    if share < 1 or batch % share:
        raise ValueError(f"t-share must be >= 1 and divide the batch size {batch}, got {share}")
    t = torch.randint(0, num_train_timesteps, (batch // share,), generator=generator)
    return t.repeat(share)


def diffusion_loss(
    model: VideoUNet,
    x0: torch.Tensor,  # [B, F, C, H, W] in [−1, 1]
    labels: torch.Tensor | None,  # [B] long
    abar: torch.Tensor,  # [T] ᾱ
    generator: torch.Generator,
    *,
    label_dropout: float = 0.1,
    mask_probs=DEFAULT_MASK_PROBS,
    loss: str = "mse",
    eta: float = 1e-3,
    weighting: str = "uniform",
    snr_gamma: float = 5.0,
    t_share: int = 1,
    forward=None,
    return_unweighted: bool = False,
):
    """One training loss: noise x0 at uniform t, predict ε or v, MSE or Charbonnier, optionally
    Min-SNR-weighted per video. ``forward`` replaces ``model(...)`` (e.g. a compiled model).
    With ``return_unweighted``: (loss, the same loss without the weights) — for logging."""
    cfg = model.config
    b, f = x0.shape[:2]
    t = sample_timesteps(b, cfg.num_train_timesteps, t_share, generator)
    noise = torch.randn(x0.shape, generator=generator)
    ab = abar[t].to(x0.dtype).view(b, 1, 1, 1, 1)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    target = noise if cfg.prediction_type == "epsilon" else ab.sqrt() * noise - (1 - ab).sqrt() * x0
    ctx = mask = None
    if cfg.context:
        mask = sample_context_masks(b, f, mask_probs, generator)
        ctx = x0
    if cfg.num_classes > 0 and labels is not None:
        drop = torch.rand(b, generator=generator) < label_dropout
        labels = torch.where(drop, torch.full_like(labels, cfg.num_classes), labels)
    else:
        labels = None
    pred = (forward or model)(xt, t.float(), labels, context=ctx, context_mask=mask).float()
    if loss == "charbonnier":  # VIDM robustness penalty √((pred − target)² + η²)
        per_video = torch.sqrt((pred - target) ** 2 + eta**2).flatten(1).mean(1)
    else:
        per_video = ((pred - target) ** 2).flatten(1).mean(1)  # [B]
    if weighting == "uniform":
        value = per_video.mean()
    elif weighting == "min-snr":
        value = (per_video * min_snr_weights(abar[t], cfg.prediction_type, snr_gamma)).mean()
    else:
        raise ValueError(f"loss weighting must be uniform or min-snr, got {weighting!r}")
    return (value, per_video.detach().mean()) if return_unweighted else value


def lr_base(args, progress: float, cap: float | None = None) -> float:
    """The schedule's LR (before warmup) at ``progress``, the fraction of the run done.

    One of LR_SCHEDULES from lr down to lr·min_lr_ratio: "cosine" over the whole run; "wsd"
    (warmup-stable-decay) constant until 1 − decay_fraction, then cosine over the rest;
    "constant". ``cap`` (the value where a resumed run left off) bounds it, so extending the
    horizon on resume never sends the LR back up: the run holds the cap until the new schedule
    falls below it, then decays with it."""
    if args.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr schedule must be one of {LR_SCHEDULES}, got {args.lr_schedule!r}")
    p = min(1.0, max(0.0, progress))
    if args.lr_schedule == "constant":
        value = args.lr
    else:
        if args.lr_schedule == "wsd":
            frac = args.decay_fraction
            p = max(0.0, (p - (1 - frac)) / frac) if frac > 0 else 0.0
        floor = args.lr * args.min_lr_ratio
        value = floor + (args.lr - floor) * 0.5 * (1 + math.cos(math.pi * p))
    return value if cap is None else min(value, cap)


def lr_at(args, step: int, progress: float, cap: float | None = None) -> float:
    """Linear warmup over args.warmup steps times ``lr_base(args, progress, cap)``."""
    warm = min(1.0, (step + 1) / max(1, args.warmup))
    return warm * lr_base(args, progress, cap)


def resume_lr_cap(state: dict, run_dir: Path) -> float | None:
    """The schedule LR a resumed run left off at: state["lr_base"], else (checkpoints written
    before it was recorded) the last LR in log.jsonl. None for a fresh run."""
    if state.get("lr_base") is not None:
        return float(state["lr_base"])
    log = run_dir / "log.jsonl"
    if state.get("step", 0) > 0 and log.is_file():
        lines = log.read_text().splitlines()
        if lines:
            return float(json.loads(lines[-1])["lr"])
    return None


def training_step(
    model: VideoUNet,
    opt: torch.optim.Optimizer,
    x0: torch.Tensor,  # [B, F, C, H, W] in [−1, 1]
    labels: torch.Tensor,  # [B] long
    abar: torch.Tensor,
    generator: torch.Generator,
    args,
    forward=None,
) -> tuple[float, float]:
    """One optimizer step of the recipe in ``args``; returns (loss, unweighted loss)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16)):
        loss, raw = diffusion_loss(
            model,
            x0,
            labels,
            abar,
            generator,
            label_dropout=args.label_dropout,
            mask_probs=args.mask_probs,
            loss=args.loss,
            eta=args.charbonnier_eta,
            weighting=args.loss_weighting,
            snr_gamma=args.snr_gamma,
            t_share=args.t_share,
            forward=forward,
            return_unweighted=True,
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if args.grad_clip and args.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    opt.step()
    return float(loss.detach()), float(raw)


def hardware_string(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} with {threads} threads"


# ----------------------------------------------------------------------------- checkpointing


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for idx, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"state.{idx}.{k}"] = torch.as_tensor(v).detach().clone().contiguous()
    return out


def _load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if not key.startswith("state."):
            continue
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def save_checkpoint(run_dir: Path, model, ema: dict, opt, generator, rng, state: dict) -> None:
    """Write run_dir/checkpoint atomically (a fresh directory swapped in by rename)."""
    from safetensors.torch import save_file

    final = run_dir / CKPT_DIR
    tmp = run_dir / (CKPT_DIR + ".tmp")
    old = run_dir / (CKPT_DIR + ".old")
    for d in (tmp, old):
        if d.exists():
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
    tmp.mkdir(parents=True)
    save_file(
        {k: v.detach().contiguous() for k, v in model.state_dict().items()},
        str(tmp / "model.safetensors"),
    )
    save_file({k: v.contiguous() for k, v in ema.items()}, str(tmp / "ema.safetensors"))
    opt_t = _optimizer_tensors(opt)
    opt_t["rng.torch"] = generator.get_state()
    save_file(opt_t, str(tmp / "optimizer.safetensors"))
    st = dict(state)
    st["numpy_rng"] = rng.bit_generator.state
    (tmp / "state.json").write_text(json.dumps(st, indent=2) + "\n")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        for f in old.iterdir():
            f.unlink()
        old.rmdir()


def load_checkpoint(run_dir: Path, model, ema: dict, opt, generator, rng) -> dict:
    ck = run_dir / CKPT_DIR
    src = str(ck / "model.safetensors")
    state_t = load_state(ck / "model.safetensors")
    check_state_dict(model, state_t, src)
    model.load_state_dict(state_t)
    ema_t = load_state(ck / "ema.safetensors")
    check_state_dict(model, ema_t, str(ck / "ema.safetensors"))
    for k, v in ema.items():
        v.copy_(ema_t[k])
    opt_t = load_state(ck / "optimizer.safetensors")
    if opt is not None:
        _load_optimizer_tensors(opt, opt_t)
    generator.set_state(opt_t["rng.torch"])
    st = json.loads((ck / "state.json").read_text())
    rng.bit_generator.state = st.pop("numpy_rng")
    return st


@torch.no_grad()
def ema_update(ema: dict, model: torch.nn.Module, decay: float) -> None:
    params = dict(model.named_parameters())
    keys = [k for k in ema if k in params]
    torch._foreach_lerp_([ema[k] for k in keys], [params[k].detach() for k in keys], 1.0 - decay)


def export(run_dir: Path, out_dir: Path, config: ModelConfig, ema: dict, state: dict, args) -> Path:
    model = VideoUNet(config)
    model.load_state_dict(ema)
    meta = {
        "steps": state.get("step", 0),
        "wall_time_s": round(state.get("wall_time", 0.0), 1),
        "cpu_time_s": round(state.get("cpu_time", 0.0), 1),
        "final_loss_ema": state.get("loss_ema"),
        "hardware": state.get("hardware") or hardware_string(args.threads),
        "commands": state.get("commands", []),
        "training_args": state.get("args", {}),
        "data": "vdengine.balls.data, "
        f"{config.window} frames at {config.image_size}x{config.image_size}, label = number of balls",
        "weights": "EMA",
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__,
    }
    save_model(model, out_dir, extra_metadata=meta)
    return out_dir


# ------------------------------------------------------------------------------------- train


def run(args) -> int:
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

    cfg_path = run_dir / "config.json"
    resuming = (run_dir / CKPT_DIR / "state.json").is_file()
    if resuming:
        config = ModelConfig.from_json(cfg_path)
    else:
        config = model_config_from_args(args)
        config.to_json(cfg_path)

    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(args.seed)
        model = VideoUNet(config).set_ops("reference").train()
    ema = {k: v.detach().clone() for k, v in model.named_parameters()}
    decay_params = [p for n, p in model.named_parameters() if p.dim() > 1]
    other_params = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW(
        [
            {"params": decay_params, "weight_decay": args.weight_decay},
            {"params": other_params, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.99),
    )
    generator = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    state = {"step": 0, "wall_time": 0.0, "cpu_time": 0.0, "loss_ema": None, "losses": [],
             "commands": []}
    if resuming:
        state.update(load_checkpoint(run_dir, model, ema, opt, generator, rng))
        say(f"resumed {run_dir} at step {state['step']} ({state['wall_time']:.0f} s trained)")
    state["hardware"] = hardware_string(args.threads)
    out_dir = Path(args.export) if args.export else run_dir / EXPORT_DIR
    if args.export_only:
        if not resuming:
            raise ValueError(f"no checkpoint in {run_dir} to export")
        export(run_dir, out_dir, config, ema, state, args)
        say(f"exported EMA weights of step {state['step']} to {out_dir}")
        return 0

    state["commands"] = state.get("commands", []) + [command_line()]
    state["args"] = {k: v for k, v in vars(args).items() if k != "func"}
    say(
        f"model {config.name}: {model.num_parameters() / 1e6:.2f} M parameters, "
        f"{config.prediction_type}, {config.schedule} schedule; batch {args.batch_size} clips of "
        f"{config.window}x{config.image_size}x{config.image_size}; {args.threads} threads"
    )

    abar = alphas_cumprod(config)
    lr_cap = None if args.lr_restart else resume_lr_cap(state, run_dir)
    if lr_cap is not None:
        say(f"LR capped at {lr_cap:.3g}, where the run left off (--lr-restart to lift)")
    stop = {"signal": None}

    def on_signal(signum, frame):  # finish the current step, then checkpoint and exit
        stop["signal"] = signal.Signals(signum).name

    old_handler = signal.signal(signal.SIGTERM, on_signal) if _main_thread() else None
    limit_s = args.time_limit * 60 if args.time_limit else None
    cpu_limit_s = args.cpu_time_limit * 60 if args.cpu_time_limit else None
    # Checkpoints written before CPU time was recorded resume counting from 0.
    cpu0, c_start = state.get("cpu_time", 0.0), time.process_time()
    last_log_t, last_log_step = time.perf_counter(), state["step"]
    wall0 = state["wall_time"]
    t_start = last_ckpt = time.perf_counter()
    window_losses: list[float] = []
    window_raw: list[float] = []
    reason = "done"
    try:
        while True:
            elapsed = wall0 + (time.perf_counter() - t_start)
            cpu = cpu0 + (time.process_time() - c_start)
            if args.steps is not None and state["step"] >= args.steps:
                reason = f"reached {args.steps} steps"
                break
            if limit_s is not None and elapsed >= limit_s:
                reason = f"time limit {args.time_limit:g} min"
                break
            if cpu_limit_s is not None and cpu >= cpu_limit_s:
                reason = f"CPU time limit {args.cpu_time_limit:g} min"
                break
            if stop["signal"]:
                reason = stop["signal"]
                break
            progress = max(
                state["step"] / args.steps if args.steps else 0.0,
                elapsed / limit_s if limit_s else 0.0,
                cpu / cpu_limit_s if cpu_limit_s else 0.0,
            )
            base = lr_base(args, progress, lr_cap)
            lr = lr_at(args, state["step"], progress, lr_cap)
            for g in opt.param_groups:
                g["lr"] = lr
            frames, labels = generate_clips(args.batch_size, config.window, config.image_size, rng)
            lv, raw = training_step(
                model, opt, to_model_range(frames), torch.from_numpy(labels), abar, generator, args
            )
            step = state["step"] = state["step"] + 1
            state["lr_base"] = base
            ema_update(ema, model, min(args.ema_decay, (1 + step) / (10 + step)))
            if not math.isfinite(lv):
                raise FloatingPointError(f"loss is {lv} at step {step}")
            window_losses.append(lv)
            window_raw.append(raw)
            le = state["loss_ema"]  # of the unweighted loss: comparable across weightings
            state["loss_ema"] = raw if le is None else 0.98 * le + 0.02 * raw
            state["wall_time"] = wall0 + (time.perf_counter() - t_start)
            state["cpu_time"] = cpu0 + (time.process_time() - c_start)
            if step % args.log_every == 0:
                now = time.perf_counter()
                sps = (step - last_log_step) / max(now - last_log_t, 1e-9)
                last_log_t, last_log_step = now, step
                rec = {
                    "step": step,
                    "loss": sum(window_losses) / len(window_losses),
                    "loss_ema": state["loss_ema"],
                    "lr": lr,
                    "steps_per_s": sps,
                    "clips_per_s": sps * args.batch_size,
                    "wall_time": state["wall_time"],
                    "cpu_time": state["cpu_time"],
                }
                if args.loss_weighting != "uniform":  # the unweighted loss stays comparable
                    rec["loss_unweighted"] = sum(window_raw) / len(window_raw)
                window_losses, window_raw = [], []
                state["losses"].append([step, round(rec["loss"], 6)])
                with open(run_dir / "log.jsonl", "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                say(
                    f"step {step:6d} | loss {rec['loss']:.4f} (ema {rec['loss_ema']:.4f}) | "
                    f"lr {lr:.2e} | {sps:.3f} steps/s ({rec['clips_per_s']:.2f} clips/s) | "
                    f"{state['wall_time']:.0f} s ({state['cpu_time']:.0f} s CPU)"
                )
            due = args.ckpt_minutes and time.perf_counter() - last_ckpt >= args.ckpt_minutes * 60
            if (args.ckpt_every and step % args.ckpt_every == 0) or due:
                save_checkpoint(run_dir, model, ema, opt, generator, rng, state)
                last_ckpt = time.perf_counter()
    except KeyboardInterrupt:
        reason = "KeyboardInterrupt"
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    state["wall_time"] = wall0 + (time.perf_counter() - t_start)
    state["cpu_time"] = cpu0 + (time.process_time() - c_start)
    save_checkpoint(run_dir, model, ema, opt, generator, rng, state)
    say(f"stopped ({reason}) at step {state['step']}; checkpoint in {run_dir / CKPT_DIR}")
    if not args.no_export:
        export(run_dir, out_dir, config, ema, state, args)
        say(f"exported EMA weights to {out_dir}")
    return 0


def command_line() -> str:
    """This process's command as a user would type it."""
    argv0 = Path(sys.argv[0]).name if sys.argv else "python"
    head = "python -m vdengine.balls.train" if argv0 in ("train.py", "__main__.py") else argv0
    return " ".join([head, *(shlex.quote(a) for a in sys.argv[1:])])


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(
        argparse.ArgumentParser(prog="python -m vdengine.balls.train", description=__doc__.split("\n")[0])
    )
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

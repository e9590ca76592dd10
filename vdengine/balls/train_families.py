"""Train a seed-family model (VIDM or VideoFusion) on procedural bouncing balls.

    python -m vdengine.balls.train_families --family vidm --run-dir runs/vidm --time-limit 25
    python -m vdengine.balls.train_families --family videofusion --run-dir runs/vf --time-limit 25

The recipe follows vdengine.balls.train (same data, AdamW with weight decay on matrices only,
gradient clipping, linear warmup then cosine LR, EMA of the weights, 10% label dropout for
classifier-free guidance, reference ops with autograd) with each paper's objective, ε-prediction
on the linear β schedule as both papers:

- VIDM (design/SEEDS.md §1): per clip, the content generator learns frame 0 and the motion
  generator one random frame n ∈ [1, L−1] given the clean frame 0, frame n−1 (teacher forcing,
  as the authors) and n; MSE on ε, or VIDM's Charbonnier penalty √((ε̂ − ε)² + η²)
  (``--loss charbonnier``). Both generators and the motion encoder train jointly.
- VideoFusion (§3): ε_i = √λ·b + √(1−λ)·r_i with b shared by a clip's frames; loss on
  ε̂_i = √λ·b̂ + √(1−λ)·r̂_i with a stop-gradient on b̂ for every frame but the middle one (joint
  training as the paper), plus ``--part-loss`` w·(‖b̂ − b‖² + ‖r̂ − r‖²) (default 0).

Run directory: config.json, checkpoint/ (safetensors + state.json, the format of
vdengine.balls.train), log.jsonl, and at the end model/ (the EMA weights as a loadable family
model directory, with training.json). Re-running the same command resumes; ``--steps`` and
``--time-limit`` are totals over all resumed runs. SIGTERM / Ctrl-C checkpoint and export.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vdengine.balls.data import generate_clips, to_model_range
from vdengine.balls.train import (
    CKPT_DIR,
    EXPORT_DIR,
    ema_update,
    hardware_string,
    load_checkpoint,
    save_checkpoint,
)
from vdengine.models.families import FAMILIES, build_model, config_class, save_family
from vdengine.models.family_config import FamilyConfig
from vdengine.models.imageunet import UNetConfig
from vdengine.models.videofusion import VideoFusion, decomposed_noise
from vdengine.models.vidm import VIDM

#: Batch sizes (clips per step) by family: VIDM uses 2 frames of each clip, VideoFusion all.
DEFAULT_BATCH = {"vidm": 32, "videofusion": 8}


def tiny_family_config(family: str, **overrides) -> FamilyConfig:
    """A very small config of `family` for tests (16×16, 4 frames, 2 levels of 16 channels)."""
    unet = UNetConfig(base_channels=16, channel_mult=(1, 2), num_groups=4, class_embed_dim=16)
    if family == "vidm":
        base = {"name": "vidm-tiny", "image_size": 16, "num_frames": 4, "content": unet,
                "motion": unet, "motion_hidden": 8}
    else:
        base = {"name": "videofusion-tiny", "image_size": 16, "window": 4, "base": unet,
                "residual": {"base_channels": 16, "channel_mult": [1, 2],
                             "attention_levels": [1], "temporal_conv_levels": [0, 1],
                             "head_dim": 16, "num_groups": 4, "class_embed_dim": 16}}
    base.update(overrides)
    return config_class(family)(**base)


# ----------------------------------------------------------------------------------- losses
def _penalty(diff: Tensor, loss: str, eta: float) -> Tensor:
    if loss == "charbonnier":  # VIDM's robustness penalty √(d² + η²)
        return torch.sqrt(diff * diff + eta * eta).mean()
    return diff.pow(2).mean()


def _noised(x0: Tensor, abar: Tensor, generator: torch.Generator, noise: Tensor | None = None
            ) -> tuple[Tensor, Tensor, Tensor]:
    """(x_t, t [B] float, ε) at uniform integer t for x0 [B, ...]."""
    b = x0.shape[0]
    t = torch.randint(0, abar.shape[0], (b,), generator=generator)
    eps = torch.randn(x0.shape, generator=generator) if noise is None else noise
    ab = abar[t].to(x0.dtype).view(b, *([1] * (x0.dim() - 1)))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t.float(), eps


def _drop_labels(labels: Tensor | None, num_classes: int, p: float,
                 generator: torch.Generator) -> Tensor | None:
    if num_classes == 0 or labels is None:
        return None
    drop = torch.rand(labels.shape[0], generator=generator) < p
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


def vidm_loss(model: VIDM, clips: Tensor, labels: Tensor | None, abar: Tensor,
              generator: torch.Generator, *, label_dropout: float = 0.1, loss: str = "mse",
              eta: float = 1e-8) -> tuple[Tensor, dict[str, float]]:
    """clips [B, L, C, H, W] in [−1, 1] → (loss, {"content": .., "motion": ..})."""
    b, L = clips.shape[:2]
    labels = _drop_labels(labels, model.config.num_classes, label_dropout, generator)
    xt, t, eps = _noised(clips[:, :1], abar, generator)
    content = _penalty(model.content(xt, t, labels) - eps, loss, eta)
    n = torch.randint(1, L, (b,), generator=generator)
    rows = torch.arange(b)
    xt, t, eps = _noised(clips[rows, n][:, None], abar, generator)
    pred = model.motion(xt, t, labels, first_frame=clips[:, 0], prev_frame=clips[rows, n - 1],
                        frame_index=n)
    motion = _penalty(pred - eps, loss, eta)
    return content + motion, {"content": float(content.detach()),
                             "motion": float(motion.detach())}


def videofusion_loss(model: VideoFusion, clips: Tensor, labels: Tensor | None, abar: Tensor,
                     generator: torch.Generator, *, label_dropout: float = 0.1,
                     loss: str = "mse", eta: float = 1e-8, part_loss: float = 0.0
                     ) -> tuple[Tensor, dict[str, float]]:
    """clips [B, F, C, H, W] in [−1, 1] → (loss, {"eps": .., "base": .., "residual": ..})."""
    cfg = model.config
    b, f = clips.shape[:2]
    labels = _drop_labels(labels, cfg.num_classes, label_dropout, generator)
    noise, base, residual = decomposed_noise(b, f, tuple(clips.shape[2:]), cfg.lam, generator)
    xt, t, eps = _noised(clips, abar, generator, noise=noise)
    b_hat, r_hat = model.parts(xt, t, labels)
    middle = (torch.arange(f) == f // 2).view(1, f, 1, 1, 1)
    # Stop-gradient on b̂ for the frames other than the middle one (the paper's joint training).
    b_all = torch.where(middle, b_hat[:, None], b_hat.detach()[:, None])
    total = _penalty(model.combine(b_all, r_hat) - eps, loss, eta)
    parts = {"eps": float(total.detach())}
    base_l = _penalty(b_hat - base[:, 0], loss, eta)
    res_l = _penalty(r_hat - residual, loss, eta)
    parts.update(base=float(base_l.detach()), residual=float(res_l.detach()))
    if part_loss > 0:
        total = total + part_loss * (base_l + res_l)
    return total, parts


# -------------------------------------------------------------------------------- arguments
def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--family", required=True, choices=sorted(FAMILIES))
    p.add_argument("--run-dir", required=True, help="checkpoints, logs and the exported model")
    m = p.add_argument_group("model (ignored when resuming: the run's config.json wins)")
    m.add_argument("--preset", choices=("default", "tiny"), default="default")
    m.add_argument("--config", help="a family config JSON file (overrides --preset)")
    m.add_argument("--lam", type=float, help="VideoFusion's λ (default 0.5)")
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=int, help="clips per step (vidm 32, videofusion 8)")
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine floor / lr")
    t.add_argument("--warmup", type=int, default=50, help="linear warmup steps")
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--grad-clip", type=float, default=1.0)
    t.add_argument("--ema-decay", type=float, default=0.998)
    t.add_argument("--loss", choices=("mse", "charbonnier"), default="mse")
    t.add_argument("--charbonnier-eta", type=float, default=1e-8, help="η (VIDM: 1e-8)")
    t.add_argument("--part-loss", type=float, default=0.0,
                   help="VideoFusion: weight of ‖b̂ − b‖² + ‖r̂ − r‖² beside the ε̂ loss")
    t.add_argument("--label-dropout", type=float, default=0.1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    s = p.add_argument_group("stopping, logging, checkpoints")
    s.add_argument("--steps", type=int, help="total optimizer steps (over resumes)")
    s.add_argument("--time-limit", type=float, help="total training minutes (over resumes)")
    s.add_argument("--cpu-time-limit", type=float,
                   help="total CPU minutes of the training process (over resumes): a budget "
                        "that does not depend on how busy a shared machine is")
    s.add_argument("--log-every", type=int, default=20)
    s.add_argument("--ckpt-every", type=int, default=200)
    s.add_argument("--export", help=f"export directory (default RUN_DIR/{EXPORT_DIR})")
    s.add_argument("--export-only", action="store_true", help="export the checkpoint's EMA")
    s.add_argument("--no-export", action="store_true", help="do not export at the end")
    s.add_argument("--quiet", action="store_true")
    return p


def config_from_args(args) -> FamilyConfig:
    cls = config_class(args.family)
    if args.config:
        cfg = cls.from_json(Path(args.config))
    elif args.preset == "tiny":
        cfg = tiny_family_config(args.family)
    else:
        cfg = cls()
    if args.lam is not None:
        if args.family != "videofusion":
            raise ValueError("--lam applies to --family videofusion only")
        d = cfg.to_dict()
        d["lam"] = args.lam
        cfg = cls.from_dict(d)
    return cfg


def lr_at(args, step: int, progress: float) -> float:
    """Linear warmup over args.warmup steps, then cosine from lr down to lr·min_lr_ratio."""
    floor = args.lr * args.min_lr_ratio
    cos = floor + (args.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cos * min(1.0, (step + 1) / max(1, args.warmup))


def export(out_dir: Path, config: FamilyConfig, ema: dict, state: dict, args) -> Path:
    model = build_model(config)
    model.load_state_dict(ema)
    meta = {
        "family": config.FAMILY,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": state.get("step", 0),
        "wall_time_s": round(state.get("wall_time", 0.0), 1),
        "cpu_time_s": round(state.get("cpu_time", 0.0), 1),
        "final_loss_ema": state.get("loss_ema"),
        "hardware": state.get("hardware") or hardware_string(args.threads),
        "commands": state.get("commands", []),
        "training_args": state.get("args", {}),
        "data": "vdengine.balls.data, label = number of balls",
        "objective": "epsilon, linear beta schedule, " + (
            "content (frame 0) + motion (random frame n >= 1) losses" if config.FAMILY == "vidm"
            else f"decomposed noise lam={getattr(config, 'lam', None)}, stop-gradient on the "
                 "base estimate except the middle frame"),
        "weights": "EMA",
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__,
    }
    save_family(model, out_dir, extra_metadata=meta)
    return out_dir


# ------------------------------------------------------------------------------------ train
def run(args) -> int:
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    cfg_path = run_dir / "config.json"
    resuming = (run_dir / CKPT_DIR / "state.json").is_file()
    if resuming:
        family = json.loads(cfg_path.read_text()).get("family")
        if family != args.family:
            raise ValueError(f"{run_dir} holds a {family!r} run, not --family {args.family}")
        config = config_class(family).from_json(cfg_path)
    else:
        config = config_from_args(args)
        config.to_json(cfg_path)
    batch = args.batch_size or DEFAULT_BATCH[args.family]
    if batch < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch}")

    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's RNG untouched
        torch.manual_seed(args.seed)
        model = build_model(config).set_ops("reference").train()
    ema = {k: v.detach().clone() for k, v in model.named_parameters()}
    params = list(model.named_parameters())
    opt = torch.optim.AdamW(
        [{"params": [p for _, p in params if p.dim() > 1], "weight_decay": args.weight_decay},
         {"params": [p for _, p in params if p.dim() <= 1], "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.99))
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
        export(out_dir, config, ema, state, args)
        say(f"exported EMA weights of step {state['step']} to {out_dir}")
        return 0
    state["commands"] = state.get("commands", []) + [
        " ".join(["python -m vdengine.balls.train_families", *sys.argv[1:]])]
    state["args"] = {k: v for k, v in vars(args).items() if k != "func"}
    say(f"{config.FAMILY} {config.name}: {sum(p.numel() for _, p in params) / 1e6:.2f} M "
        f"parameters; batch {batch} clips; {args.threads} threads")

    abar = config.noise_schedule().alphas_cumprod.to(torch.float32)
    length = config.num_frames if args.family == "vidm" else config.window
    stop = {"signal": None}

    def on_signal(signum, frame):  # finish the step, then checkpoint and export
        stop["signal"] = signal.Signals(signum).name

    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, on_signal) if main_thread else None
    limit_s = args.time_limit * 60 if args.time_limit else None
    cpu_limit_s = args.cpu_time_limit * 60 if args.cpu_time_limit else None
    wall0, t_start = state["wall_time"], time.perf_counter()
    cpu0, c_start = state.get("cpu_time", 0.0), time.process_time()
    last = (t_start, state["step"])
    window: list[float] = []
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
            progress = max(state["step"] / args.steps if args.steps else 0.0,
                           elapsed / limit_s if limit_s else 0.0,
                           cpu / cpu_limit_s if cpu_limit_s else 0.0)
            lr = lr_at(args, state["step"], progress)
            for g in opt.param_groups:
                g["lr"] = lr
            frames, labels = generate_clips(batch, length, config.image_size, rng)
            clips, labels = to_model_range(frames), torch.from_numpy(labels)
            common = {"label_dropout": args.label_dropout, "loss": args.loss,
                      "eta": args.charbonnier_eta}
            if args.family == "vidm":
                loss, parts = vidm_loss(model, clips, labels, abar, generator, **common)
            else:
                loss, parts = videofusion_loss(model, clips, labels, abar, generator,
                                               part_loss=args.part_loss, **common)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip and args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
            step = state["step"] = state["step"] + 1
            ema_update(ema, model, min(args.ema_decay, (1 + step) / (10 + step)))
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise FloatingPointError(f"loss is {lv} at step {step}")
            window.append(lv)
            le = state["loss_ema"]
            state["loss_ema"] = lv if le is None else 0.98 * le + 0.02 * lv
            state["wall_time"] = wall0 + (time.perf_counter() - t_start)
            state["cpu_time"] = cpu0 + (time.process_time() - c_start)
            if step % args.log_every == 0:
                now = time.perf_counter()
                sps = (step - last[1]) / max(now - last[0], 1e-9)
                last = (now, step)
                rec = {"step": step, "loss": sum(window) / len(window), "parts": parts,
                       "loss_ema": state["loss_ema"], "lr": lr, "steps_per_s": sps,
                       "wall_time": state["wall_time"], "cpu_time": state["cpu_time"]}
                window = []
                state["losses"].append([step, round(rec["loss"], 6)])
                with open(run_dir / "log.jsonl", "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                say(f"step {step:6d} | loss {rec['loss']:.4f} (ema {rec['loss_ema']:.4f}) "
                    f"{ {k: round(v, 4) for k, v in parts.items()} } | lr {lr:.2e} | "
                    f"{sps:.3f} steps/s | {state['wall_time']:.0f} s "
                    f"({state['cpu_time']:.0f} s CPU)")
            if args.ckpt_every and step % args.ckpt_every == 0:
                save_checkpoint(run_dir, model, ema, opt, generator, rng, state)
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
        export(out_dir, config, ema, state, args)
        say(f"exported EMA weights to {out_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m vdengine.balls.train_families", description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

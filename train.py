"""Train AlexNet on an ImageFolder (default: the flower photos in data_set/flower_data).

    python train.py --demo                          # no download: synthetic shapes, 2-7 min on a CPU
    python train.py                                 # data_set/flower_data/{train,val}, the `fast` recipe
    python train.py --recipe tutorial               # the tutorial's exact settings
    python train.py --budget 10m                    # the best run that fits 10 minutes of this machine
    python train.py --data my_photos --epochs 30    # your own <class>/<image> folders
    python train.py --resume auto                   # continue runs/last.pth if there is one, else start
    torchrun --nproc_per_node=4 train.py            # several GPUs (DistributedDataParallel)

How it reads, top to bottom, in the tutorial's order: ``load_data`` builds the two ImageFolder datasets with
their transforms and wraps them in loaders; ``train_step`` is one optimizer step (forward, loss, zero_grad,
backward, step); ``train_one_epoch`` runs it over the training batches; ``validate`` scores the validation
images; ``finish_epoch`` saves best.pth on improvement and last.pth every epoch. ``fit`` puts them together,
after the settings were resolved once into a frozen Config (alexnet/settings.py) and the model and optimizer
built (alexnet/trainer.py). The production parts are single calls: the plan of a --budget run
(alexnet/budget.py), the range test of --lr find (alexnet/lr_finder.py), a stop (Ctrl-C, SIGTERM) that saves the
step it reached so that --resume goes on as if never stopped (alexnet/preemption.py), and the diagnosis at the
end (alexnet/diagnosis.py).
"""
from alexnet.startup import STARTED  # first: --budget counts from here, before torch takes seconds to load

import argparse
import dataclasses
import itertools
import math
import os
import random
import sys
import time
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from alexnet import budget, checkpoint, diagnosis, figures, lr_finder, outputs, stats, transforms
from alexnet.board import Board, require as require_tensorboard
from alexnet.datasets import CachedImageFolder
from alexnet.errors import ArgumentError, CheckpointError, DataError, OutputError, run_main
from alexnet.loaders import Loaders, cache_policy, data_ready, make_loaders, train_cache_side
from alexnet.machine import Machine, dist_info, predict_batches, progress, setup_machine, teardown
from alexnet.preemption import Stop, TrainingStopped, how_to_go_on, one_line, rng_states, skip_to, start_epoch
from alexnet.settings import Config, get_args_parser, resolve_config
from alexnet.trainer import Trainer, build_trainer

EXPLODED = 100  # a training loss this many times ln(classes) has diverged: no model that learns gets near it


@dataclass
class RunState:
    """What changes as the run goes: progress, the best so far, the per-epoch rows."""
    plan: budget.Plan
    started: float  # time.monotonic() when the command started, minus the time spent before a resume
    costs: budget.Costs | None = None  # --budget: the measured costs the plan was made from
    epoch: int = 0  # epochs completed
    best_acc: float = 0.0
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    saved_epoch: int = 0  # the epoch last.pth holds (0: none written by this run or the one it resumes)
    saved_steps: int = 0  # and the steps of the next epoch, when it was written mid-epoch (save_position)
    confusion: torch.Tensor | None = None  # the last validation's counts[true, predicted]
    # a mid-epoch checkpoint's place, used by the next epoch: its steps done, their sums, each rank's random state
    position: dict | None = None
    board: Board | None = None  # --tensorboard, on rank 0
    drawn_epochs: int = 0  # the epochs curves.png shows
    drawn_at: float = field(default_factory=time.monotonic)  # and when it was drawn (or the state made)


# ---------------------------------------------------------------- the data: two ImageFolders
def load_data(cfg: Config, machine: Machine) -> Loaders:
    """The training and validation images as torchvision ImageFolders, and their loaders."""
    # training: RandomResizedCrop + horizontal flip (+ --aug), drawn anew for every batch from pixels decoded
    # once into the cache with their short side at 256 px (train_cache_side), room for the crops
    train_transform = transforms.train_augment(cfg.img_size, cfg.crop_scale, cfg.aug)
    # validation: short side to 256 px + centre 224 px (the tutorial's Resize((224, 224)) with --recipe tutorial),
    # the same every epoch: applied once, as the images are decoded into the cache
    val_transform = cfg.eval_transform
    policy = cache_policy(cfg)
    with data_ready(cfg, machine):
        train_set = CachedImageFolder(os.path.join(cfg.data, "train"), policy, transform=train_transform,
                                      pre_transform=transforms.ShortSide(train_cache_side(cfg)),
                                      log=machine.log)
        val_set = CachedImageFolder(os.path.join(cfg.data, "val"), policy, pre_transform=val_transform,
                                    log=machine.log)
    return make_loaders(cfg, machine, train_set, val_set)


# ---------------------------------------------------------------- one epoch: train, validate
def train_step(cfg: Config, machine: Machine, trainer: Trainer, images: torch.Tensor,
               targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step on one batch, the only one in the project: --budget times it and
    --lr find runs it. Returns (logits, the targets trained on, the loss before the step)."""
    # the batch to the device: uint8 pixels -> normalised floats (PCA lighting with --lighting)
    x = transforms.normalize(images.to(machine.device, non_blocking=True), cfg.mean, cfg.std, trainer.lighting)
    y = targets.to(machine.device, non_blocking=True)
    if trainer.mix is not None:  # MixUp / CutMix: the targets become class probabilities
        x, y = trainer.mix(x, y)
    with machine.autocast():  # bf16 / fp16 where the device runs it faster; fp32 with --precision fp32
        logits = trainer.step_model(x)
        loss = trainer.criterion(logits, y)
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(loss).backward()  # the scaler scales only for fp16, whose small gradients underflow
    if cfg.clip_grad:
        trainer.scaler.unscale_(trainer.optimizer)
        nn.utils.clip_grad_norm_(trainer.model.parameters(), cfg.clip_grad)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    if trainer.ema is not None:  # --ema: the running average of the weights, which validation uses
        trainer.ema.update_parameters(trainer.model)
    return logits, y, loss


def lr_at(cfg: Config, run_plan: budget.Plan, step: int) -> float:
    """Learning rate of optimizer step ``step``: linear warmup, then constant or cosine to
    zero at the plan's last step (--sched plateau: ReduceLROnPlateau owns it after warmup)."""
    warm = cfg.warmup_epochs * run_plan.steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.sched == "cosine":
        total = max(1.0, run_plan.total_steps - warm)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / total)))
    return cfg.lr


def train_one_epoch(cfg: Config, machine: Machine, trainer: Trainer, loader, state: RunState, stop: Stop) -> dict:
    """One pass over the training batches, a ``train_step`` each (the rest of the epoch when
    --resume continues one stopped mid-way); the epoch's mean loss and accuracy."""
    trainer.model.train()  # dropout on
    steps = state.plan.steps_in(state.epoch)  # a budget's last epoch may stop early
    resumed, state.position = state.position, None
    done = resumed["steps"] if resumed else 0  # steps of this epoch a mid-epoch checkpoint had taken
    sums = {"seen": 0, "correct": 0, "loss_sum": 0.0, "size": 0, "loss_max": 0.0} | (resumed["sums"] if resumed else {})
    images_now = 0
    batches = progress(itertools.islice(loader, steps - done), machine,
                       f"epoch {state.epoch + 1}/{state.plan.epochs} train", total=steps - done)
    for i, (images, targets) in enumerate(batches, start=done):
        set_learning_rate(cfg, trainer, state, state.epoch * state.plan.steps_per_epoch + i)
        logits, y, loss = train_step(cfg, machine, trainer, images, targets)
        value = loss.item()
        check_loss(cfg, value, logits.shape[-1], f"epoch {state.epoch + 1} step {i + 1}")
        correct = (logits.argmax(1) == (y.argmax(1) if y.dim() == 2 else y)).sum().item()  # soft labels: their top
        images_now += len(y)
        sums = {"seen": sums["seen"] + len(y), "correct": sums["correct"] + correct, "size": images.shape[-1],
                "loss_sum": sums["loss_sum"] + value * len(y), "loss_max": max(sums["loss_max"], value)}
        if stop.requested():
            raise TrainingStopped(f"interrupted at epoch {state.epoch + 1} step {i + 1}", 130,
                                  {"epoch": state.epoch, "steps": i + 1, "sums": sums})
    seen = max(sums["seen"], 1)
    return {"train_loss": sums["loss_sum"] / seen, "train_acc": sums["correct"] / seen, "loss_max": sums["loss_max"],
            "lr": trainer.optimizer.param_groups[0]["lr"], "images": images_now, "size": sums["size"]}


def set_learning_rate(cfg: Config, trainer: Trainer, state: RunState, step: int) -> None:
    """The schedule's rate for this step (``lr_at``), unless --sched plateau owns it after warmup."""
    if trainer.plateau is None or step < cfg.warmup_epochs * state.plan.steps_per_epoch:
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr_at(cfg, state.plan, step)
    if state.board:
        state.board.learning_rate(step, trainer.optimizer.param_groups[0]["lr"])


def check_loss(cfg: Config, value: float, num_classes: int, where: str) -> None:
    """Stop a run whose loss is not a number or has exploded: over EXPLODED times ln(classes),
    the loss of a blind guess, which training starts near and only falls from. Runs are
    deterministic, so the advice is a lower --lr, never the same command again."""
    blind = math.log(num_classes)
    if math.isfinite(value) and value <= EXPLODED * blind:
        return
    what = f"loss is {value}" if not math.isfinite(value) else \
        f"loss {value:.3g} is over {EXPLODED}x a blind guess's ({blind:.2f} = ln {num_classes} classes)"
    raise TrainingStopped(f"{what} at {where}: training diverged at --lr {cfg.lr:g}", 1, diverged=True)


def validate(model: nn.Module, loader, machine: Machine, cfg: Config, k: int) -> dict:
    """Top-1 / top-k accuracy and the plain cross-entropy (no smoothing) of the validation
    set, and its confusion counts[true, predicted]."""
    totals = torch.zeros(4, dtype=torch.float64)  # count, loss sum, top-1, top-k
    n = [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features  # through any wrapper
    confusion = torch.zeros(n, n, dtype=torch.long)
    for probs, targets in predict_batches(model, loader, machine, cfg.mean, cfg.std):
        top = probs.topk(k, dim=1).indices
        totals += torch.tensor([len(targets), -probs.gather(1, targets[:, None]).clamp_min(1e-12).log().sum().item(),
                                (top[:, 0] == targets).sum().item(), (top == targets[:, None]).any(1).sum().item()],
                               dtype=torch.float64)
        confusion += stats.confusion_matrix(targets, top[:, 0], n)
    if machine.world > 1:
        totals, confusion = totals.to(machine.device), confusion.to(machine.device)
        torch.distributed.all_reduce(totals)
        torch.distributed.all_reduce(confusion)
        totals, confusion = totals.cpu(), confusion.cpu()
    count = max(totals[0].item(), 1)
    return {"val_loss": totals[1].item() / count, "val_top1": totals[2].item() / count,
            f"val_top{k}": totals[3].item() / count, "confusion": confusion}


def run_epoch(cfg: Config, machine: Machine, trainer: Trainer, loaders: Loaders, state: RunState, stop: Stop) -> dict:
    """Train one epoch and validate; returns the epoch's metrics row."""
    start_epoch(cfg, loaders, state.epoch, machine.rank, state.plan.sizes[state.epoch])
    if state.position:
        skip_to(loaders.train, state.position["steps"], machine, state.position["rng"][machine.rank])
    t0 = time.perf_counter()
    trained = train_one_epoch(cfg, machine, trainer, loaders.train, state, stop)
    train_s = time.perf_counter() - t0
    k = min(cfg.topk, len(loaders.classes))
    val = validate(trainer.validated_model, loaders.val, machine, cfg, k)
    state.confusion = val.pop("confusion")
    val_s = time.perf_counter() - t0 - train_s
    raw = {}
    if trainer.ema is not None:  # the raw weights too, to show what the average bought
        raw["raw_val_top1"] = round(validate(trainer.model, loaders.val, machine, cfg, k)["val_top1"], 5)
    return {"epoch": state.epoch + 1, "lr": trained["lr"], "crop_size": trained["size"],
            "train_loss": round(trained["train_loss"], 5), "train_acc": round(trained["train_acc"], 5),
            "step_loss_max": round(trained["loss_max"], 5),
            "val_loss": round(val["val_loss"], 5), "val_top1": round(val["val_top1"], 5),
            f"val_top{k}": round(val[f"val_top{k}"], 5), **raw,
            "seconds": round(time.perf_counter() - t0, 2), "train_seconds": round(train_s, 2),
            "elapsed_s": round(time.monotonic() - state.started, 2),
            "train_images_per_s": round(trained["images"] * machine.world / train_s, 1),
            "val_images_per_s": round(len(loaders.val.dataset) * machine.world / max(val_s, 1e-9), 1)}


# ---------------------------------------------------------------- after each epoch: record, save
def finish_epoch(cfg: Config, machine: Machine, trainer: Trainer, state: RunState, row: dict,
                 classes: list[str]) -> None:
    """Record the epoch: best so far, the plateau schedule, the log line, and (rank 0) the files."""
    improved = row["val_top1"] > state.best_acc or state.best_epoch == 0  # the first epoch is the best so far
    if improved:
        state.best_acc, state.best_epoch = row["val_top1"], row["epoch"]
    if trainer.plateau is not None and row["epoch"] > cfg.warmup_epochs:
        trainer.plateau.step(row["val_top1"])
    state.history.append(row)
    state.epoch = row["epoch"]
    k = min(cfg.topk, len(classes))
    raw = f" (raw weights {row['raw_val_top1']:.4f})" if "raw_val_top1" in row else ""
    machine.log(f"epoch {row['epoch']}/{state.plan.epochs}  train loss {row['train_loss']:.4f}  "
                f"val loss {row['val_loss']:.4f}  val top-1 {row['val_top1']:.4f}{raw}  top-{k} {row[f'val_top{k}']:.4f}  "
                f"{row['seconds']:.1f}s  ({row['train_images_per_s']:.0f} img/s){'  *best*' if improved else ''}")
    if not machine.is_main:
        return
    save_checkpoints(cfg, machine, trainer, state, classes)
    outputs.write_metrics(Path(cfg.output_dir) / "metrics.csv", state.history)
    if time.monotonic() - state.drawn_at >= figures.REDRAW_S:
        draw_curves(cfg, state)
    if state.board:
        state.board.epoch(row)
        state.board.confusion(row["epoch"], row["epoch"] == state.plan.epochs, state.confusion, classes)


def draw_curves(cfg: Config, state: RunState) -> None:
    """curves.png, unless it shows every epoch already (rank 0)."""
    if state.drawn_epochs != state.epoch:
        figures.plot_curves(cfg, state.history, Path(cfg.output_dir) / "curves.png")
        state.drawn_epochs, state.drawn_at = state.epoch, time.monotonic()


def save_checkpoints(cfg: Config, machine: Machine, trainer: Trainer, state: RunState, classes: list[str]) -> None:
    """last.pth, and best.pth when this epoch is the best: written first, then copied to
    last.pth (two files, so that replacing or calibrating one never changes the other; a kill
    between the two leaves a last.pth that resumes into this epoch again, never a last.pth
    without its best.pth)."""
    out = Path(cfg.output_dir)
    ckpt = checkpoint.build(cfg, machine, trainer, state, classes)
    if state.best_epoch == state.epoch:
        outputs.save_torch(ckpt, out / "best.pth")
        outputs.copy_atomic(out / "best.pth", out / "last.pth")
    else:
        outputs.save_torch(ckpt, out / "last.pth")
    state.saved_epoch, state.saved_steps = state.epoch, 0


def save_position(cfg: Config, machine: Machine, trainer: Trainer, state: RunState, classes: list[str],
                  position: dict) -> None:
    """A stop mid-epoch: last.pth with the weights, optimizer and schedule of that step and
    its place in the epoch (``position``: steps done, their sums, every rank's random
    state), so that --resume continues at the next step as if never stopped. best.pth and
    metrics.csv stay as the last complete epoch left them."""
    ranks = rng_states(machine)  # every rank takes part; rank 0 writes
    if not machine.is_main:
        return
    ckpt = checkpoint.build(cfg, machine, trainer, state, classes) | {"position": position | {"rng": ranks}}
    outputs.save_torch(ckpt, Path(cfg.output_dir) / "last.pth")
    state.saved_epoch, state.saved_steps = state.epoch, position["steps"]


# ---------------------------------------------------------------- the run
def fit(cfg: Config, resume: dict | None, started: float) -> dict:
    """setup -> restore -> epochs -> summary."""
    machine = setup_machine(cfg.device, cfg.precision, cfg.quiet, resume)
    try:
        loaders = load_data(cfg, machine)
        if resume and resume["classes"] != loaders.classes:
            raise CheckpointError(f"{cfg.resume}: trained on classes {resume['classes']}, "
                                  f"but {cfg.data} has {loaders.classes}")
        trainer = build_trainer(cfg, machine, loaders, resume)
        if cfg.lr_mode and resume is None:
            suggestion = lr_finder.find(cfg, machine, trainer, loaders, train_step)
            if cfg.lr_mode == "find":
                return {"lr_suggestion": suggestion, "output_dir": cfg.output_dir}
            cfg = dataclasses.replace(cfg, lr=suggestion)  # recorded in the checkpoint; --resume keeps it
            trainer = build_trainer(cfg, machine, loaders, None)  # the same start as a run given --lr this
        state = restore_state(cfg, machine, trainer, loaders, started, resume)
        if cfg.overwrite and resume is None and machine.is_main:
            # only now, once the new run has started: a run that fails to start leaves the old model alone
            removed = outputs.clear_run(Path(cfg.output_dir))
            if removed:
                machine.log(f"--overwrite: removed the older run's {', '.join(removed)}")
        announce(cfg, machine, loaders, state)
        train_epochs(cfg, machine, trainer, loaders, state)
        diagnosis.report_run(cfg, machine, loaders, state.history)
        return summarize(cfg, machine, state)
    finally:
        teardown(machine)


def restore_state(cfg: Config, machine: Machine, trainer: Trainer, loaders: Loaders, started: float,
                  resume: dict | None) -> RunState:
    """A fresh state with its plan, or the checkpoint's: weights were loaded by init_model;
    here the optimizer, GradScaler, LR schedule, weight average, progress, random state,
    and a budget run's plan, kept as it was."""
    if not resume:
        chosen, costs = budget.choose_plan(cfg, machine, trainer, loaders, train_step, started)
        return RunState(chosen, started, costs)
    steps = len(loaders.train)
    kept = budget.Plan(**resume["plan"]) if cfg.budget else budget.fixed_plan(cfg.epochs, cfg.resizing, steps)
    state = RunState(kept, started, epoch=resume["epoch"], history=list(resume["metrics"]),
                     best_acc=resume["best_acc"], best_epoch=resume["best_epoch"], saved_epoch=resume["epoch"])
    state.started -= state.history[-1].get("elapsed_s", 0.0) if state.history else 0.0
    trainer.load_state(resume)
    # each epoch reseeds from (--seed, epoch) anyway; this covers anything drawn before it
    torch.set_rng_state(resume["rng"]["torch"])
    random.setstate(resume["rng"]["python"])
    position = resume.get("position")
    if position and len(position["rng"]) != machine.world:
        machine.log(f"warning: {cfg.resume} stopped in epoch {state.epoch + 1} with {len(position['rng'])} "
                    f"process(es), this run has {machine.world}: that epoch starts again from its first step")
    elif position:
        state.position = position
    done = f", and {position['steps']} steps of epoch {state.epoch + 1}" if state.position else ""
    machine.log(f"resumed from {cfg.resume}: epoch {state.epoch} done{done}, best top-1 {state.best_acc:.4f}")
    return state


def train_epochs(cfg: Config, machine: Machine, trainer: Trainer, loaders: Loaders, state: RunState) -> None:
    """The loop, until the plan's last epoch or a stop: Ctrl-C or SIGTERM, a loss that is not
    a number, a checkpoint that cannot be written (a full disk), an image that vanished or
    became unreadable. Each ends in one line that says what last.pth holds and how to go on."""
    state.board = Board(cfg.output_dir) if cfg.tensorboard and machine.is_main else None
    with Stop(machine) as stop:
        try:
            while state.epoch < state.plan.epochs:
                epoch_start = time.monotonic()
                row = run_epoch(cfg, machine, trainer, loaders, state, stop)
                finish_epoch(cfg, machine, trainer, state, row, loaders.classes)
                if state.costs is not None and state.epoch < state.plan.epochs:
                    budget.replan(cfg, machine, state, row, time.monotonic() - epoch_start)
                    if state.epoch == state.plan.epochs and machine.is_main:  # cut short: the files say so
                        save_checkpoints(cfg, machine, trainer, state, loaders.classes)
            if machine.is_main:
                draw_curves(cfg, state)
        except (TrainingStopped, OutputError, DataError) as e:
            if machine.is_main:
                with suppress(OutputError):  # a full disk: the line below says so
                    draw_curves(cfg, state)
            code = e.code if isinstance(e, TrainingStopped) else 1
            if isinstance(e, TrainingStopped) and e.position:
                save_position(cfg, machine, trainer, state, loaders.classes, e.position)
            diverged = isinstance(e, TrainingStopped) and e.diverged
            if diverged:
                diagnosis.report_run(cfg, machine, loaders, state.history, one_line(e))
            go_on = how_to_go_on(cfg, state.saved_epoch, state.saved_steps, state.best_epoch, diverged)
            raise TrainingStopped(f"{one_line(e)}; {go_on}", code) from None
        finally:
            if state.board:
                state.board.close(cfg, state.best_acc, state.best_epoch)


def announce(cfg: Config, machine: Machine, loaders: Loaders, state: RunState) -> None:
    machine.log(f"{machine.device} {machine.precision}, arch {cfg.arch}, recipe {cfg.recipe}, {len(loaders.classes)} "
                f"classes, {len(loaders.train.dataset)} train / {len(loaders.val.dataset) * machine.world} val images, "
                f"{state.plan.epochs} epochs of batch {cfg.batch_size}{f' x {machine.world}' if machine.world > 1 else ''}")
    if cfg.budget:
        machine.log(f"budget {cfg.budget:g} s, {time.monotonic() - state.started:.0f} s used: "
                    f"plan {budget.describe(state.plan, state.costs)}")
    for note in loaders.notes:
        machine.log(note)
    if machine.is_main:
        outputs.write_text(Path(cfg.output_dir) / "class_indices.json", outputs.class_indices_json(loaders.classes))


def summarize(cfg: Config, machine: Machine, state: RunState) -> dict:
    out = Path(cfg.output_dir)
    files = [f"{out / name}" for name in ("best.pth", "last.pth") if (out / name).exists()]
    machine.log(f"done: best val top-1 {state.best_acc:.4f} at epoch {state.best_epoch}; weights in "
                f"{' and '.join(files) or '(no checkpoint written)'}")
    return {"best_acc": state.best_acc, "best_epoch": state.best_epoch, "history": state.history, "output_dir": str(out)}


def main(args: argparse.Namespace, started: float | None = None) -> dict:
    """Train as the arguments say; returns the best accuracy, its epoch and the per-epoch rows."""
    started = time.monotonic() if started is None else started
    cfg, resume = resolve_config(args)
    if cfg.tensorboard:
        require_tensorboard()
    rank = dist_info()[0]
    out = Path(cfg.output_dir)
    for option, folder in (("--output-dir", out), ("--cache-dir", Path(cfg.cache_dir))):
        if folder.resolve().is_relative_to(Path(cfg.data).resolve()):
            raise ArgumentError(f"{option} {folder}: is inside the data folder {cfg.data}; what train.py writes "
                                f"there would mix with the images. Pick a folder outside it")
    fresh = resume is None and not cfg.overwrite and cfg.lr_mode != "find"  # find writes no model
    if rank == 0 and cfg.cache_mem != 0 and Path(cfg.cache_dir).parent != out:
        outputs.check_writable_folder(cfg.cache_dir, "--cache-dir")
    with outputs.output_lock(out, fresh) if rank == 0 else nullcontext():
        return fit(cfg, resume, started)


def cli(argv: list[str] | None = None, started: float | None = None) -> int:
    def run(args: argparse.Namespace) -> int:
        try:
            main(args, started)
        except TrainingStopped as e:
            print(f"stopped: {e}", file=sys.stderr)
            return e.code
        return 0

    return run_main(run, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli(started=STARTED))

"""Train AlexNet on an ImageFolder (default: the flower photos in data_set/flower_data).

    python train.py --demo                          # no download: synthetic shapes, 2-7 min on a CPU
    python train.py                                 # data_set/flower_data/{train,val}, the `fast` recipe
    python train.py --recipe tutorial              # the tutorial's exact settings
    python train.py --recipe long                  # 70 epochs, small crops first: 0.78 test top-1 (docs/results.md)
    python train.py --budget 10m                    # the best run that fits 10 minutes of this machine
    python train.py --data my_photos --epochs 30    # your own <class>/<image> folders
    python train.py --resume runs/last.pth          # continue an interrupted run
    python train.py --resume auto                   # continue runs/last.pth if there is one, else start
    torchrun --nproc_per_node=4 train.py            # several GPUs (DistributedDataParallel)
    python train.py --tensorboard                   # also runs/tensorboard/ (board.py)

Writes into --output-dir (default runs/): best.pth (on improvement), last.pth (every
epoch, and at the step a run was stopped: Ctrl-C, SIGTERM, SIGUSR1), class_indices.json,
metrics.csv and curves.png. Each checkpoint is one dict of
plain types, so ``predict.py`` rebuilds the model from it alone.

Reading order: config.py (every setting, declared once and resolved once by
``resolve_config`` into a frozen ``Config``), then ``fit()``: setup (``setup_machine``,
``load_data``, ``build_trainer``) -> restore (``restore_state``, which also plans a --budget
run) -> the epoch loop (``train_epochs``: ``run_epoch``, ``finish_epoch``) -> ``summarize``.
"""
import time

COMMAND_STARTED = time.monotonic()  # --budget counts from here: importing torch alone takes seconds on a slow CPU

from errors import quiet_startup_interrupt  # noqa: E402

if __name__ == "__main__":
    quiet_startup_interrupt()  # Ctrl-C while torch loads: one line, not a traceback

import argparse
import copy
import csv
import dataclasses
import io
import itertools
import json
import math
import os
import random
import shutil
import signal
import statistics
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.profiler import record_function  # labels for bench.py --profile (a few us each when it is off)

import data
import device_data
import outputs
import plan
import stats
from errors import STOP_SIGNALS, ArgumentError, CheckpointError, DataError, OutputError, run_main
from metadata import MIN_IMG_SIZE
from machine import (Machine, broadcast, cache_budget, device_cache_budget, dist_info, predict_batches, progress,
                     setup_machine, synchronize, teardown)
from board import Board, require as require_tensorboard
from config import Config, get_args_parser, resolve_config
from model import CHECKPOINT_FORMAT, AlexNet, load_checkpoint

# ---------------------------------------------------------------- data
@dataclass(frozen=True)
class Loaders:
    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    classes: list[str]
    generator: torch.Generator  # draws the training order (this rank's); reseeded each epoch
    counts: list[int]  # training images per class
    balance: str  # --balance as resolved for these counts: none, sampler or loss
    notes: list[str]  # what the data looks like: class counts, imbalance, copies across the splits


def load_data(cfg: Config, machine: Machine) -> Loaders:
    """Decode (once, into the cache) and wrap both splits; with torchrun, rank 0 decodes
    first and the others then read its cache."""
    if cfg.demo and machine.is_main:
        import shapes  # only the demo draws pictures (ImageDraw stays out of predict.py)

        machine.log(f"demo data: {shapes.make_shapes(cfg.data)}")
    if machine.world > 1 and not machine.is_main:
        torch.distributed.barrier()
    try:
        loaders = build_loaders(cfg, machine)
    except DataError as e:
        if os.path.isdir(cfg.data):
            raise
        raise DataError(f"{e}. Get the flower photos with `python data_set/download.py` (or split your "
                        f"own with `python data_set/split_data.py SRC`), or try `python train.py --demo`") from None
    if machine.world > 1 and machine.is_main:
        torch.distributed.barrier()
    return loaders


def build_loaders(cfg: Config, machine: Machine) -> Loaders:
    train_root, val_root = os.path.join(cfg.data, "train"), os.path.join(cfg.data, "val")
    classes = data.folders.find_classes(train_root, machine.log)
    val_classes = data.folders.find_classes(val_root, machine.log)
    if val_classes != classes:
        raise DataError(f"{val_root}: classes {val_classes} differ from {train_root}: {classes}")
    if len(classes) < 2:
        raise DataError(f"{train_root}: only one class folder ({classes[0]}); a classifier needs at least two")
    policy = data.CachePolicy(cfg.cache_dir, cache_budget(cfg.cache_mem), cfg.bad_images, quiet=cfg.quiet)
    train_split = data.build_split(train_root, classes, data.ShortSide(train_cache_side(cfg)),
                                   data.train_augment(cfg.img_size, cfg.crop_scale, cfg.augmentations), policy,
                                   machine.log)
    val_split = data.build_split(val_root, classes, cfg.eval_transform, None, policy, machine.log)
    train_ds, val_ds = train_split.dataset, val_split.dataset
    counts = [0] * len(classes)
    for _, target in train_split.samples:
        counts[target] += 1
    balance = data.balance_mode(cfg.balance, counts)
    notes = []  # logged by rank 0 only: the other ranks need not read the files again
    if machine.is_main:
        notes = data.describe_classes(classes, counts, balance) + data.copies_across(train_split.samples,
                                                                                     val_split.samples)
    shard = range(machine.rank, len(train_ds), machine.world)  # with torchrun, each rank's own images
    val_batch = cfg.val_batch_size or (32 if machine.device.type == "cpu" else 256)
    if machine.world > 1:
        val_ds = torch.utils.data.Subset(val_ds, range(machine.rank, len(val_ds), machine.world))
    on_device, why = device_batches_decision(cfg, machine, train_ds, shard)
    machine.log(f"training batches: {why}")
    if on_device:
        resident = device_data.ResidentImages([train_ds.images[i] for i in shard],
                                              [train_ds.targets[i] for i in shard], machine.device)
        train = device_data.DeviceBatches(train_ds, resident, cfg.batch_size, cfg.crop_scale, cfg.img_size,
                                          drop_last=len(shard) > cfg.batch_size)
        val = device_data.DeviceTensorBatches(val_ds, machine.device, val_batch)
        return Loaders(train, val, classes, train.generator, counts, balance, notes)
    workers = cfg.workers if cfg.workers >= 0 else auto_workers(machine.device, isinstance(train_ds, data.CachedImages))
    generator = torch.Generator()
    if balance == "sampler":  # each class drawn equally often, from this rank's share of the images
        sampler = data.BalancedSampler(shard, [1 / counts[train_split.samples[i][1]] for i in shard], generator)
    elif machine.world > 1:
        sampler = torch.utils.data.DistributedSampler(train_ds, machine.world, machine.rank, shuffle=True, seed=cfg.seed)
    else:
        sampler = torch.utils.data.RandomSampler(train_ds, generator=generator)
    sampler = data.SeededSampler(sampler)
    # progressive resizing changes the crop size each epoch: workers must start afresh to see it
    common = dict(num_workers=workers, pin_memory=machine.device.type == "cuda",
                  prefetch_factor=4 if workers > 0 else None, persistent_workers=workers > 0 and not cfg.img_size_start)
    # drop a last small batch only when there is a full one: a rank's share may be smaller than a batch
    # the loader's own generator only seeds its workers (their draws do not matter: SeededSampler); the order's
    # generator is never touched by it, so the order is the same with or without (persistent) workers
    train = torch.utils.data.DataLoader(train_ds, cfg.batch_size, sampler=sampler, drop_last=len(sampler) > cfg.batch_size,
                                        generator=torch.Generator().manual_seed(cfg.seed), **common)
    val = torch.utils.data.DataLoader(val_ds, val_batch, shuffle=False, **common)
    return Loaders(train, val, classes, generator, counts, balance, notes)


def train_cache_side(cfg: Config) -> int:
    """The short side the training images are cached at: 256 for 224 px crops, room for the crop."""
    return max(cfg.img_size * 8 // 7, cfg.val_resize)


def device_batches_decision(cfg: Config, machine: Machine, train_ds, shard: range) -> tuple[bool, str]:
    """Whether training batches are built on the device (device_data.py), and the log line why."""
    per_image = f"cropped per image by {'the main process' if cfg.workers <= 0 else 'DataLoader workers'}"
    if cfg.device_batches == "off":
        return False, f"{per_image} (--device-batches off)"
    if not isinstance(train_ds, data.CachedImages):
        return False, f"{per_image}: the decoded images are not cached in memory"
    if cfg.device_gaps:  # --device-batches on with these was refused by check_ranges
        return False, f"{per_image}: batches built on the device do not implement {cfg.device_gaps}"
    if cfg.device_batches == "auto" and machine.device.type != "cuda":
        return False, f"{per_image} (on a CPU bench.py measured no gain from batched crops; " \
                      f"--device-batches on forces them)"
    need = device_data.ResidentImages.bytes_needed([train_ds.images[i] for i in shard])
    budget = device_cache_budget(cfg.device_cache_mem, machine.device)
    if cfg.device_batches == "auto" and need > budget:
        return False, f"{per_image}: the images need {need / 2**30:.2f} GiB on {machine.device}, over " \
                      f"--device-cache-mem {budget / 2**30:.2f} GiB"
    return True, f"built on {machine.device} from {len(shard)} resident images ({need / 2**20:.0f} MiB, uint8), " \
                 f"cropped a batch at a time"


def auto_workers(device: torch.device, cached: bool) -> int:
    """On CUDA the CPU only feeds the GPU: use the cores. On a CPU the model needs every
    core; cached images only need cropping, which the main process does between steps."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return min(8, cores)
    return 0 if cached else min(2, cores - 1)


# ---------------------------------------------------------------- what trains
@dataclass
class Trainer:
    """The objects that learn, built once by ``build_trainer``."""
    model: AlexNet  # the weights being trained; state_dict keys as the tutorial's
    step_model: nn.Module  # what a training step calls: the model, or its DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None
    ema: nn.Module | None  # torch's AveragedModel with --ema
    lighting_basis: list | None  # (eigenvalues, eigenvectors) of the training pixels, with --lighting
    mix: Callable | None  # MixUp / CutMix

    @property
    def validated_model(self) -> nn.Module:
        """What validation, best.pth and predict.py use: the weight average with --ema."""
        return self.model if self.ema is None else self.ema.module


def build_trainer(cfg: Config, machine: Machine, loaders: Loaders, resume: dict | None) -> Trainer:
    model = init_model(cfg, len(loaders.classes), resume, machine).to(machine.device, memory_format=torch.channels_last)
    step_model = model
    if machine.world > 1:
        step_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[machine.device.index] if machine.device.type == "cuda" else None)
    if cfg.compile:
        step_model = torch.compile(step_model)
    optimizer = build_optimizer(cfg, model)
    basis = resume.get("lighting") if resume else None
    if cfg.lighting and basis is None:
        basis = lighting_basis(loaders.train.dataset)
    return Trainer(model=model, step_model=step_model, optimizer=optimizer,
                   scaler=torch.amp.GradScaler(machine.device.type, enabled=machine.precision == "fp16"),
                   criterion=nn.CrossEntropyLoss(weight=class_weights(loaders.balance, loaders.counts, machine.device),
                                                 label_smoothing=cfg.label_smoothing),
                   plateau=plateau_schedule(cfg, optimizer), ema=weight_average(cfg, model),
                   lighting_basis=basis, mix=batch_mixing(cfg, len(loaders.classes)))


def class_weights(balance: str, counts: list[int], device: torch.device) -> torch.Tensor | None:
    """--balance loss: each class's loss weighted by n / (classes x its images), so every
    class contributes alike (scikit-learn's "balanced" weights)."""
    if balance != "loss":
        return None
    return torch.tensor([sum(counts) / (len(counts) * max(c, 1)) for c in counts], device=device)


def init_model(cfg: Config, num_classes: int, resume: dict | None, machine: Machine) -> AlexNet:
    torch.manual_seed(cfg.seed)
    if cfg.weights and not resume:
        model = pretrained_model(cfg, num_classes, machine)
    else:
        model = AlexNet(num_classes, init_weights=cfg.init == "arch", arch=cfg.arch, dropout=cfg.dropout)
    if resume:
        model.load_state_dict(resume["raw_model"] if cfg.ema else resume["model"])
    if cfg.freeze_features:
        for p in model.features.parameters():
            p.requires_grad_(False)
    return model


def pretrained_model(cfg: Config, num_classes: int, machine: Machine) -> AlexNet:
    """--weights: every layer from the file except the last, which is new and sized for our classes."""
    ckpt = load_checkpoint(cfg.weights)
    model = AlexNet(num_classes, arch=cfg.arch, dropout=cfg.dropout)
    body = {k: v for k, v in ckpt["model"].items() if not k.startswith("classifier.6.")}
    try:
        missing, unexpected = model.load_state_dict(body, strict=False)
    except RuntimeError:
        missing, unexpected = [], ["(shapes differ)"]
    if unexpected or set(missing) != {"classifier.6.weight", "classifier.6.bias"}:
        raise CheckpointError(f"{cfg.weights}: does not fit AlexNet(arch={cfg.arch!r}) "
                              f"(missing {sorted(missing)}, unexpected {sorted(unexpected)})")
    machine.log(f"initialised from {cfg.weights} (arch {cfg.arch}); new {num_classes}-class head")
    return model


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() > 1], "weight_decay": cfg.wd},
              {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]  # no weight decay on biases
    # one fused kernel per step instead of a loop over tensors: +20% images/s on a 2-core CPU
    fused = {"fused": True} if params[0].device.type in ("cpu", "cuda") else {}
    if cfg.opt == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, **fused)
    return (torch.optim.AdamW if cfg.opt == "adamw" else torch.optim.Adam)(groups, lr=cfg.lr, **fused)


def plateau_schedule(cfg: Config, optimizer) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """--sched plateau (the paper): LR / 10 after --patience epochs without a better top-1.
    torch counts an epoch as bad when top-1 is not above the best (threshold 0) and divides
    on the bad epoch after ``patience`` of them, hence patience - 1."""
    if cfg.sched != "plateau":
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=cfg.patience - 1,
                                                      threshold=0.0, threshold_mode="abs")


def weight_average(cfg: Config, model: nn.Module) -> nn.Module | None:
    """--ema: torch's AveragedModel with an exponential moving average of the parameters."""
    if not cfg.ema:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema))


def batch_mixing(cfg: Config, num_classes: int) -> Callable | None:
    """torchvision's MixUp and/or CutMix on normalised batches (one of them per batch if both)."""
    from torchvision.transforms import v2

    mixes = [cls(alpha=alpha, num_classes=num_classes) for cls, alpha in
             ((v2.MixUp, cfg.mixup_alpha), (v2.CutMix, cfg.cutmix_alpha)) if alpha]
    if len(mixes) == 2:
        return v2.RandomChoice(mixes)
    return mixes[0] if mixes else None


def lighting_basis(dataset) -> list:
    """PCA of the training pixels: every cached image, or 500 decoded ones."""
    if isinstance(dataset, data.CachedImages):
        return list(data.pca_basis(dataset.images))
    return list(data.pca_basis(dataset[i][0] for i in range(min(500, len(dataset)))))


# ---------------------------------------------------------------- the plan and its schedule
def lr_at(cfg: Config, run_plan: plan.Plan, step: int) -> float:
    """Learning rate of optimizer step ``step``: linear warmup, then constant or cosine to
    zero at the plan's last step (--sched plateau: ReduceLROnPlateau owns it after warmup)."""
    warm = cfg.warmup_epochs * run_plan.steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.sched == "cosine":
        total = max(1.0, run_plan.total_steps - warm)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / total)))
    return cfg.lr


def choose_plan(cfg: Config, machine: Machine, trainer: Trainer, loaders: Loaders, started: float
                ) -> tuple[plan.Plan, plan.Costs | None]:
    """--epochs as given; or, with --budget, the most steps that end when the time does."""
    steps = len(loaders.train)
    if not cfg.budget:
        return plan.fixed_plan(cfg.epochs, cfg.resizing, steps), None
    costs = measure_costs(cfg, machine, trainer, loaders)
    left = budget_seconds_left(cfg, started)
    chosen = plan.fit_budget(left, cfg.resizing, steps, costs)
    if chosen is None or chosen.epochs == 1 and chosen.last_epoch_steps < steps:
        whole = plan.plan_seconds(plan.fixed_plan(1, cfg.resizing, steps), costs)
        raise ArgumentError(f"--budget {cfg.budget:g}s: one epoch takes about {whole:.0f} s here and setting up "
                            f"took {time.monotonic() - started:.0f} s; give at least "
                            f"{math.ceil(whole + time.monotonic() - started) + 1} s")
    return broadcast(machine, (chosen, costs))


def budget_seconds_left(cfg: Config, started: float) -> float:
    """What is left of --budget, keeping 1% and a second for writing the summary and exiting."""
    return 0.99 * cfg.budget - 1.0 - (time.monotonic() - started)


def measure_costs(cfg: Config, machine: Machine, trainer: Trainer, loaders: Loaders) -> plan.Costs:
    """What an epoch will cost, measured on this machine before training: training steps at
    the smallest, middle and largest crop size, a validation pass, and writing checkpoints."""
    model = copy.deepcopy(trainer.model)  # a throwaway copy: the run's own weights stay untouched
    end = cfg.train_size_end
    sizes = sorted({s for s in (cfg.img_size_start, (cfg.img_size_start + end) // 2, end) if MIN_IMG_SIZE <= s <= end})
    step_s = {size: step_seconds(cfg, machine, model, trainer.criterion, loaders, size) for size in sizes}
    t0, seen = time.perf_counter(), 0
    for images, _ in itertools.islice(loaders.val, 2):
        with torch.inference_mode(), machine.autocast():
            model.eval()(data.normalize(images.to(machine.device), cfg.mean, cfg.std))
        seen += len(images)
    synchronize(machine.device)
    val_s = (time.perf_counter() - t0) / max(seen, 1) * len(loaders.val.dataset)
    probe = Path(cfg.output_dir) / f"budget-probe{outputs.TMP_MARK}{os.getpid()}"
    t0 = time.perf_counter()
    outputs.save_torch(model.state_dict(), probe)
    saved_s = time.perf_counter() - t0
    probe.unlink()
    # a checkpoint holds the weights and the optimizer's one or two buffers per weight
    return plan.Costs(step_s, val_s, epoch_overhead_s=saved_s * (2 if cfg.opt == "sgd" else 3))


def step_seconds(cfg: Config, machine: Machine, model: nn.Module, criterion: nn.Module, loaders: Loaders,
                 size: int) -> float:
    """Median seconds of a training step at this crop size, batch loading included."""
    optimizer = build_optimizer(cfg, model)
    set_crop_size(loaders.train, size)
    batches, times = iter(loaders.train), []
    for _ in range(min(4, len(loaders.train))):
        t0 = time.perf_counter()
        images, targets = next(batches)
        x = data.normalize(images.to(machine.device), cfg.mean, cfg.std)
        with machine.autocast():
            loss = criterion(model(x), targets.to(machine.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(machine.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:] or times)  # the first one warms up the kernels and the loader


def replan(cfg: Config, machine: Machine, state: "RunState", row: dict, epoch_wall: float) -> None:
    """After each epoch of a budget run: the costs, corrected by what that epoch really took,
    give the plan for the time that is left (the epochs, their sizes, the last one's steps);
    if no further epoch fits, the run ends now rather than overrun. Short probes misjudge how
    the cost grows with the crop size, so a single correction would drift as the crops grow."""
    predicted = state.plan.steps_in(state.epoch - 1) * state.costs.step_at(row["train_size"])
    factor = row["train_seconds"] / predicted
    saving = max(0.0, epoch_wall - row["seconds"])
    if state.epoch > 1:  # writing files varies from epoch to epoch (the first plot is slow): an average
        saving = (saving + state.costs.epoch_overhead_s) / 2
    costs = plan.Costs({s: t * factor for s, t in state.costs.step_s.items()},
                       row["seconds"] - row["train_seconds"], saving)
    left = budget_seconds_left(cfg, state.started)
    new = plan.fit_budget(left, cfg.resizing, state.plan.steps_per_epoch, costs, first_epoch=state.epoch)
    if new is None:
        new = dataclasses.replace(state.plan, epochs=state.epoch, sizes=state.plan.sizes[:state.epoch],
                                  last_epoch_steps=state.plan.steps_in(state.epoch - 1))
        machine.log(f"no further epoch fits in the {max(left, 0):.0f} s left of the budget: the run ends now")
    elif state.epoch == 1 or new.epochs != state.plan.epochs:
        machine.log(f"plan after epoch {state.epoch}: {plan.describe(new, costs)}")
    state.plan, state.costs = broadcast(machine, (new, costs))


# ---------------------------------------------------------------- run state and restore
@dataclass
class RunState:
    """What changes as the run goes: progress, the best so far, the per-epoch rows."""
    plan: plan.Plan
    started: float  # time.monotonic() when the command started, minus the time spent before a resume
    costs: plan.Costs | None = None  # --budget: the measured costs the plan was made from
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


def restore_state(cfg: Config, machine: Machine, trainer: Trainer, loaders: Loaders, started: float,
                  resume: dict | None) -> RunState:
    """A fresh state with its plan, or the checkpoint's: weights were loaded by init_model;
    here the optimizer, GradScaler, LR schedule, weight average, progress, random state,
    and a budget run's plan, kept as it was."""
    if not resume:
        chosen, costs = choose_plan(cfg, machine, trainer, loaders, started)
        return RunState(chosen, started, costs)
    steps = len(loaders.train)
    kept = plan.Plan(**resume["plan"]) if cfg.budget else plan.fixed_plan(cfg.epochs, cfg.resizing, steps)
    state = RunState(kept, started, epoch=resume["epoch"], history=list(resume["metrics"]),
                     best_acc=resume["best_acc"], best_epoch=resume["best_epoch"], saved_epoch=resume["epoch"])
    state.started -= state.history[-1].get("elapsed_s", 0.0) if state.history else 0.0
    trainer.optimizer.load_state_dict(resume["optimizer"])
    trainer.scaler.load_state_dict(resume["scaler"])
    if trainer.ema is not None:
        trainer.ema.module.load_state_dict(resume["model"])
        trainer.ema.n_averaged += 1  # it has averaged before: the next update blends instead of copying
    if trainer.plateau is not None:  # over a fresh schedule's state: a format-1 checkpoint saved only its progress
        trainer.plateau.load_state_dict(trainer.plateau.state_dict() | resume["plateau"])
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


# ---------------------------------------------------------------- one epoch
class Stop:
    """SIGINT/SIGTERM/SIGUSR1: the first asks the loop to stop after the current step (rank 0
    then writes last.pth at that step: save_position); a second one exits at once (all writes
    are atomic: last.pth is whole, the stopped step or the last complete epoch)."""

    def __init__(self, machine: Machine):
        self.machine = machine
        self.signal: int | None = None
        self.previous = {}

    def __enter__(self):
        for sig in STOP_SIGNALS:
            self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def requested(self) -> bool:
        """With torchrun, every rank stops at the same step, or the others hang in all-reduce."""
        if self.machine.world == 1:
            return self.signal is not None
        flag = torch.tensor([float(self.signal is not None)], device=self.machine.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return flag.item() > 0

    def handle(self, sig, frame):
        if self.signal is not None:
            os._exit(128 + sig)
        self.signal = sig
        print(f"\n{signal.Signals(sig).name}: stopping after this step (again to quit at once)", file=sys.stderr, flush=True)


class TrainingStopped(Exception):
    """The run stopped early: interrupted (``position``: where in the epoch, for
    save_position), or the loss stopped being a number."""

    def __init__(self, message: str, code: int, position: dict | None = None):
        super().__init__(message)
        self.code, self.position = code, position


def start_epoch(cfg: Config, loaders: Loaders, epoch: int, rank: int, crop_size: int) -> None:
    """Reseed from (--seed, epoch, rank): a resumed run replays exactly the epochs an
    uninterrupted one would, and under torchrun each rank draws its own crops, flips,
    dropout masks and mixing pairs (the weights start identical: init_model seeds alone)."""
    seed = cfg.seed * 1000 + epoch + 1_000_003 * rank
    torch.manual_seed(seed)
    random.seed(seed)
    loaders.generator.manual_seed(seed)
    if isinstance(loaders.train, device_data.DeviceBatches):
        loaders.train.skip = 0
    else:
        loaders.train.sampler.set_epoch(epoch, seed)
    set_crop_size(loaders.train, crop_size)


def skip_to(loader, steps: int, machine: Machine, rng: dict) -> None:
    """Start this epoch after its first ``steps`` batches, as a mid-epoch checkpoint left it:
    the same order (start_epoch reseeded it), the crops of those positions (SeededSampler),
    and this rank's random state at the stop (the model's dropout and mixing draw from it)."""
    if isinstance(loader, device_data.DeviceBatches):
        loader.skip = steps
    else:
        loader.sampler.skip = steps * loader.batch_size
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if rng.get("cuda") is not None and machine.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], machine.device)


def rng_states(machine: Machine) -> list[dict]:
    """Every rank's random state, gathered (what a mid-epoch checkpoint keeps)."""
    mine = {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state(machine.device) if machine.device.type == "cuda" else None}
    if machine.world == 1:
        return [mine]
    gathered: list = [None] * machine.world
    torch.distributed.all_gather_object(gathered, mine)
    return gathered


def set_crop_size(loader, size: int) -> None:
    """The training crop size from now on (progressive resizing; the budget's measurements).
    Loader workers see it because they start afresh each epoch (build_loaders)."""
    if isinstance(loader, device_data.DeviceBatches):
        loader.crop_size = size
    else:
        loader.dataset.transform.size = size


def run_epoch(cfg: Config, machine: Machine, trainer: Trainer, loaders: Loaders, state: RunState, stop: Stop) -> dict:
    """Train one epoch and validate; returns the epoch's metrics row."""
    start_epoch(cfg, loaders, state.epoch, machine.rank, state.plan.sizes[state.epoch])
    if state.position:
        skip_to(loaders.train, state.position["steps"], machine, state.position["rng"][machine.rank])
    t0 = time.perf_counter()
    trained = train_one_epoch(cfg, machine, trainer, loaders.train, state, stop)
    train_s = time.perf_counter() - t0
    k = min(cfg.topk, len(loaders.classes))
    val = evaluate(trainer.validated_model, loaders.val, machine, cfg, k)
    state.confusion = val.pop("confusion")
    val_s = time.perf_counter() - t0 - train_s
    raw = {}
    if trainer.ema is not None:  # the raw weights too, to show what the average bought
        raw["raw_val_top1"] = round(evaluate(trainer.model, loaders.val, machine, cfg, k)["val_top1"], 5)
    return {"epoch": state.epoch + 1, "lr": trained["lr"], "train_size": trained["size"],
            "train_loss": round(trained["train_loss"], 5), "train_acc": round(trained["train_acc"], 5),
            "val_loss": round(val["val_loss"], 5), "val_top1": round(val["val_top1"], 5),
            f"val_top{k}": round(val[f"val_top{k}"], 5), **raw,
            "seconds": round(time.perf_counter() - t0, 2), "train_seconds": round(train_s, 2),
            "elapsed_s": round(time.monotonic() - state.started, 2),
            "train_images_per_s": round(trained["images"] * machine.world / train_s, 1),
            "val_images_per_s": round(len(loaders.val.dataset) * machine.world / max(val_s, 1e-9), 1)}


def train_one_epoch(cfg: Config, machine: Machine, trainer: Trainer, loader, state: RunState, stop: Stop) -> dict:
    trainer.model.train()
    run_plan = state.plan
    steps = run_plan.steps_in(state.epoch)
    resumed, state.position = state.position, None
    done = resumed["steps"] if resumed else 0  # steps of this epoch a mid-epoch checkpoint had taken
    sums = dict(resumed["sums"]) if resumed else {"seen": 0, "correct": 0, "loss_sum": 0.0, "size": 0}
    images_now = 0
    lighting = data.Lighting(*trainer.lighting_basis, std=cfg.lighting) if cfg.lighting else None
    batches = labelled("batch", itertools.islice(loader, steps - done))  # a budget's last epoch may stop early
    for i, (images, targets) in enumerate(progress(batches, machine, f"epoch {state.epoch + 1}/{run_plan.epochs} train",
                                                   total=steps - done), start=done):
        step = state.epoch * run_plan.steps_per_epoch + i
        if trainer.plateau is None or step < cfg.warmup_epochs * run_plan.steps_per_epoch:
            for group in trainer.optimizer.param_groups:
                group["lr"] = lr_at(cfg, run_plan, step)
        if state.board:
            state.board.learning_rate(step, trainer.optimizer.param_groups[0]["lr"])
        with record_function("normalize"):
            x = data.normalize(images.to(machine.device, non_blocking=True), cfg.mean, cfg.std, lighting)
            y = targets.to(machine.device, non_blocking=True)
            if trainer.mix is not None:
                x, y = trainer.mix(x, y)  # y becomes soft labels: class probabilities per image
        with record_function("forward"), machine.autocast():
            logits = trainer.step_model(x)
            loss = trainer.criterion(logits, y)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingStopped(f"loss is {value} at epoch {state.epoch + 1} step {i + 1}: try a lower --lr", 1)
        optimizer_step(cfg, trainer, loss)
        with record_function("metrics"):
            images_now += len(y)
            sums = {"seen": sums["seen"] + len(y), "size": x.shape[-1], "loss_sum": sums["loss_sum"] + value * len(y),
                    "correct": sums["correct"] + (logits.argmax(1) == (y.argmax(1) if y.dim() == 2 else y)).sum().item()}
        if stop.requested():
            raise TrainingStopped(f"interrupted at epoch {state.epoch + 1} step {i + 1}", 130,
                                  {"epoch": state.epoch, "steps": i + 1, "sums": sums})
    seen = max(sums["seen"], 1)
    return {"train_loss": sums["loss_sum"] / seen, "train_acc": sums["correct"] / seen,
            "lr": trainer.optimizer.param_groups[0]["lr"], "images": images_now, "size": sums["size"]}


def optimizer_step(cfg: Config, trainer: Trainer, loss: torch.Tensor) -> None:
    with record_function("backward"):
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss).backward()
    if cfg.clip_grad:
        with record_function("clip"):
            trainer.scaler.unscale_(trainer.optimizer)
            nn.utils.clip_grad_norm_(trainer.model.parameters(), cfg.clip_grad)
    with record_function("optimizer"):
        trainer.scaler.step(trainer.optimizer)
        trainer.scaler.update()
        if trainer.ema is not None:
            trainer.ema.update_parameters(trainer.model)


def labelled(name: str, iterable):
    """Each item of ``iterable`` fetched under the profiler label ``name`` (bench.py --profile)."""
    iterator = iter(iterable)
    while True:
        with record_function(name):
            item = next(iterator, None)
        if item is None:
            return
        yield item


def evaluate(model: nn.Module, loader, machine: Machine, cfg: Config, k: int) -> dict:
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


# ---------------------------------------------------------------- after each epoch
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
    write_metrics(Path(cfg.output_dir) / "metrics.csv", state.history)
    plot_curves(cfg, state.history, Path(cfg.output_dir) / "curves.png")
    if state.board:
        state.board.epoch(row)
        state.board.confusion(row["epoch"], row["epoch"] == state.plan.epochs, state.confusion, classes)


def save_checkpoints(cfg: Config, machine: Machine, trainer: Trainer, state: RunState, classes: list[str]) -> None:
    """last.pth, and best.pth when this epoch is the best: the same bytes, a second name for
    last.pth's file (which the next epoch replaces, not rewrites)."""
    out = Path(cfg.output_dir)
    outputs.save_torch(build_checkpoint(cfg, machine, trainer, state, classes), out / "last.pth")
    state.saved_epoch, state.saved_steps = state.epoch, 0
    if state.best_epoch == state.epoch:
        outputs.link_atomic(out / "last.pth", out / "best.pth")


def save_position(cfg: Config, machine: Machine, trainer: Trainer, state: RunState, classes: list[str],
                  position: dict) -> None:
    """A stop mid-epoch: last.pth with the weights, optimizer and schedule of that step and
    its place in the epoch (``position``: steps done, their sums, every rank's random
    state), so that --resume continues at the next step as if never stopped. best.pth and
    metrics.csv stay as the last complete epoch left them."""
    ranks = rng_states(machine)  # every rank takes part; rank 0 writes
    if not machine.is_main:
        return
    ckpt = build_checkpoint(cfg, machine, trainer, state, classes) | {"position": position | {"rng": ranks}}
    outputs.save_torch(ckpt, Path(cfg.output_dir) / "last.pth")
    state.saved_epoch, state.saved_steps = state.epoch, position["steps"]


def build_checkpoint(cfg: Config, machine: Machine, trainer: Trainer, state: RunState, classes: list[str]) -> dict:
    """One dict of plain types: everything predict.py needs, and everything --resume needs."""
    # "model" holds the weights that were validated, so predict.py and --weights need not know about EMA
    weights = {"model": trainer.validated_model.state_dict()}
    if trainer.ema is not None:
        weights["raw_model"] = trainer.model.state_dict()
    return {**weights, "format": CHECKPOINT_FORMAT, "arch": cfg.arch, "num_classes": len(classes), "classes": list(classes),
            "epoch": state.epoch, "best_acc": state.best_acc, "best_epoch": state.best_epoch,
            "optimizer": trainer.optimizer.state_dict(), "scaler": trainer.scaler.state_dict(),
            "plateau": trainer.plateau.state_dict() if trainer.plateau else None,
            "config": dataclasses.asdict(cfg), "plan": dataclasses.asdict(state.plan), "metrics": state.history,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
            "lighting": trainer.lighting_basis, "eval": {"size": cfg.img_size, "resize": cfg.val_resize},
            "mean": list(cfg.mean), "std": list(cfg.std),
            "precision": machine.precision, "device_type": machine.device.type,
            "temperature": 1.0}  # evaluate.py --calibrate fits it on the validation split


def write_metrics(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    # every column any row has: rows resumed from an older checkpoint may lack the newer ones
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in history for k in row)))
    writer.writeheader()
    writer.writerows(history)
    outputs.write_text(path, buf.getvalue())


def loss_labels(cfg: Config) -> tuple[str, str]:
    """Legend labels that say how each loss was measured: the training loss includes label
    smoothing and mixing and is taken on augmented crops; validation's is plain cross-entropy."""
    extras = [f"label smoothing {cfg.label_smoothing:g}"] if cfg.label_smoothing else []
    extras += ["MixUp/CutMix soft labels"] if cfg.mixup_alpha or cfg.cutmix_alpha else []
    train = "train (augmented crops" + "".join(f", {e}" for e in extras) + ")"
    return train, "val (plain cross-entropy)"


def plot_curves(cfg: Config, history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch; the Agg canvas needs no display and no pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    epochs = [h["epoch"] for h in history]
    ax1, ax2 = fig.subplots(1, 2)
    train_label, val_label = loss_labels(cfg)
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label=train_label)
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label=val_label)
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.plot(epochs, [h["train_acc"] for h in history], "o-", label="train top-1 (augmented crops)")
    ax2.plot(epochs, [h["val_top1"] for h in history], "o-", label="val top-1")
    if all("raw_val_top1" in h for h in history):
        ax2.plot(epochs, [h["raw_val_top1"] for h in history], ".--", label="val top-1, raw weights (EMA off)")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    outputs.save_figure(fig, path)


def summarize(cfg: Config, machine: Machine, state: RunState) -> dict:
    out = Path(cfg.output_dir)
    files = [f"{out / name}" for name in ("best.pth", "last.pth") if (out / name).exists()]
    machine.log(f"done: best val top-1 {state.best_acc:.4f} at epoch {state.best_epoch}; weights in "
                f"{' and '.join(files) or '(no checkpoint written)'}")
    return {"best_acc": state.best_acc, "best_epoch": state.best_epoch, "history": state.history, "output_dir": str(out)}


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
        state = restore_state(cfg, machine, trainer, loaders, started, resume)
        if cfg.overwrite and resume is None and machine.is_main:
            # only now, once the new run has started: a run that fails to start leaves the old model alone
            removed = outputs.clear_run(Path(cfg.output_dir))
            if removed:
                machine.log(f"--overwrite: removed the older run's {', '.join(removed)}")
        announce(cfg, machine, loaders, state)
        train_epochs(cfg, machine, trainer, loaders, state)
        return summarize(cfg, machine, state)
    finally:
        teardown(machine)


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
                    replan(cfg, machine, state, row, time.monotonic() - epoch_start)
                    if state.epoch == state.plan.epochs and machine.is_main:  # cut short: the files say so
                        save_checkpoints(cfg, machine, trainer, state, loaders.classes)
        except (TrainingStopped, OutputError, DataError) as e:
            code = e.code if isinstance(e, TrainingStopped) else 1
            if isinstance(e, TrainingStopped) and e.position:
                save_position(cfg, machine, trainer, state, loaders.classes, e.position)
            raise TrainingStopped(f"{one_line(e)}; {how_to_go_on(cfg, state)}", code) from None
        finally:
            if state.board:
                state.board.close(cfg, state.best_acc, state.best_epoch)


def one_line(e: Exception) -> str:
    """An error's message; one raised in a DataLoader worker arrives wrapped in the worker's
    traceback, whose last line is the message itself."""
    text = str(e).strip()
    if "Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith(type(e).__name__) else last
    return text


def how_to_go_on(cfg: Config, state: RunState) -> str:
    last = Path(cfg.output_dir) / "last.pth"
    if not state.saved_epoch and not state.saved_steps:
        return "no checkpoint was written: run the same command again"
    held = (f"epoch {state.saved_epoch} and {state.saved_steps} steps of epoch {state.saved_epoch + 1}"
            if state.saved_steps else f"epoch {state.saved_epoch}")
    return f"last.pth holds {held}: resume with  python train.py --resume {last}"


def announce(cfg: Config, machine: Machine, loaders: Loaders, state: RunState) -> None:
    kept = (cfg.img_size / cfg.val_resize) ** 2 if cfg.val_resize else 1.0
    if kept < 0.5:
        machine.log(f"warning: validation keeps the centre {cfg.img_size} px of images resized to {cfg.val_resize} px, "
                    f"{kept:.0%} of their area, while training crops cover {cfg.crop_scale[0]:.0%}-"
                    f"{cfg.crop_scale[1]:.0%}; lower --val-resize")
    machine.log(f"{machine.device} {machine.precision}, arch {cfg.arch}, recipe {cfg.recipe}, {len(loaders.classes)} "
                f"classes, {len(loaders.train.dataset)} train / {len(loaders.val.dataset) * machine.world} val images, "
                f"{state.plan.epochs} epochs of batch {cfg.batch_size}{f' x {machine.world}' if machine.world > 1 else ''}")
    if cfg.budget:
        machine.log(f"budget {cfg.budget:g} s, {time.monotonic() - state.started:.0f} s used: "
                    f"plan {plan.describe(state.plan, state.costs)}")
    for note in loaders.notes:
        machine.log(note)
    if machine.is_main:
        outputs.write_text(Path(cfg.output_dir) / "class_indices.json", class_indices_json(loaders.classes))


def class_indices_json(classes: list[str]) -> str:
    """The tutorial's {"0": "daisy", ...}; names readable as written (Chinese too), escaped
    only where a folder name holds bytes that are not UTF-8, so json.load gives them back."""
    mapping = {str(i): c for i, c in enumerate(classes)}
    text = json.dumps(mapping, indent=4, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(mapping, indent=4)
    return text


@contextmanager
def output_lock(out: Path, fresh: bool):
    """Refuse a second train.py in the same folder (the OS drops the lock if we die), and
    a fresh run over a folder that holds a trained model, unless --overwrite. A folder this
    run created is removed again if the run ends before writing a checkpoint."""
    outputs.check_writable_folder(out, "--output-dir")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / ".lock", "a+")
    try:
        try:
            import fcntl
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            import msvcrt
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        handle.close()
        raise OutputError(f"{out}: another train.py is writing to this folder (lock {out / '.lock'}); "
                          f"wait for it or pass another --output-dir") from None
    try:
        if fresh and any((out / f).exists() for f in ("best.pth", "last.pth")):
            raise OutputError(f"{out}: already holds a trained model (best.pth/last.pth); continue it with "
                              f"--resume {out / 'last.pth'}, replace it with --overwrite, or pick another --output-dir")
        outputs.remove_stale(out)
        yield
    finally:
        handle.close()
        if created and not (out / "last.pth").exists():
            shutil.rmtree(out, ignore_errors=True)


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
    fresh = resume is None and not cfg.overwrite
    if rank == 0 and cfg.cache_mem != 0 and Path(cfg.cache_dir).parent != out:
        outputs.check_writable_folder(cfg.cache_dir, "--cache-dir")
    with output_lock(out, fresh) if rank == 0 else nullcontext():
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
    sys.exit(cli(started=COMMAND_STARTED))

"""The learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural
Networks", 2017; fastai's ``lr_find``): the run's own model, optimizer, recipe and data,
the learning rate raised exponentially from START_LR for STEPS steps until the smoothed
loss blows up; the suggestion is a tenth of the learning rate where it was lowest (fastai
v1's ``lr_min / 10``), or, where the loss never fell before it rose (AlexNet without batch
norm can sit on its plateau for longer than the test), a tenth of the last rate before it
rose. The weights it leaves are thrown away.

    python train.py --lr find               # writes runs/lr_find.png, prints the suggestion and its command
    python train.py --lr auto               # the same test first, then trains with the suggestion
"""
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from alexnet import figures
from alexnet.loaders import Loaders
from alexnet.machine import Machine, broadcast, synchronize
from alexnet.preemption import start_epoch
from alexnet.settings import Config, command_line
from alexnet.trainer import Trainer, TrainStep

START_LR, END_LR = 1e-7, 10.0
STEPS = 100  # fastai's default
MIN_STEPS = 20  # under --budget, never fewer: a coarser sweep still finds the fall
BUDGET_SHARE = 0.15  # under --budget, the share of it the test may take
SMOOTHING = 0.98  # the exponential average of the loss (bias corrected), as fastai's
BLOWN_UP = 4.0  # stop once the smoothed loss is this many times its lowest
SKIP_START = 0.1  # the share of the first steps the suggestion ignores (fastai's skip_start)
FELL = 0.02  # a smoothed loss this share below its start has fallen; this share above, has risen
TIMING_STEPS = 2  # steps at START_LR that time a step, when the test must fit a budget
PLOT = "lr_find.png"


@dataclass(frozen=True)
class RangeTest:
    lrs: list  # the learning rate of each step
    losses: list  # the smoothed loss after it

    @property
    def start(self) -> int:
        """The first step read: fastai skips the first tenth, where the average still settles."""
        return min(int(len(self.losses) * SKIP_START), len(self.losses) - 1)

    @property
    def fell(self) -> bool:
        """Whether the loss fell at all (FELL below where the reading starts) before it blew up."""
        return min(self.losses[self.start:]) < (1 - FELL) * self.losses[self.start]

    @property
    def lowest(self) -> float:
        """The learning rate where the smoothed loss was lowest (after the first tenth)."""
        return self.lrs[min(range(self.start, len(self.losses)), key=self.losses.__getitem__)]

    @property
    def flat_until(self) -> float:
        """The last learning rate before the loss first rose FELL above its start."""
        top = (1 + FELL) * self.losses[self.start]
        rise = next((i for i in range(self.start, len(self.losses)) if self.losses[i] > top), len(self.losses))
        return self.lrs[max(rise - 1, self.start)]

    @property
    def suggestion(self) -> float:
        """A tenth of ``lowest``; a tenth of ``flat_until`` where the loss never fell (a
        network that needs more steps than the test to leave its plateau); two significant digits."""
        return float(f"{(self.lowest if self.fell else self.flat_until) / 10:.2g}")

    def describe(self) -> str:
        if self.fell:
            return f"the loss was lowest at {self.lowest:.2g}"
        return f"the loss did not fall before it rose at {self.flat_until:.2g}"


def find(cfg: Config, machine: Machine, trainer: Trainer, loaders: Loaders, step: TrainStep) -> float:
    """train.py's --lr find / auto: the range test on the run's own model, optimizer, data
    and training step, the learning rate it suggests, and its plot. Under --budget it takes
    at most BUDGET_SHARE of it, and the plan is made from what is left."""
    seconds = BUDGET_SHARE * cfg.budget if cfg.budget else 0.0
    t0 = time.monotonic()
    found = range_test(cfg, machine, trainer, loaders, step, seconds)
    out = Path(cfg.output_dir)
    machine.log(f"--lr {cfg.lr_mode}: {len(found.lrs)} steps from {found.lrs[0]:.2g} to {found.lrs[-1]:.2g} in "
                f"{time.monotonic() - t0:.0f} s; {found.describe()}: suggested --lr {found.suggestion:g}")
    if cfg.opt == "sgd" and cfg.clip_grad:
        machine.log(f"warning: with SGD and gradient clipping (--clip-grad {cfg.clip_grad:g}) the loss blows up only "
                    f"at rates of 2-4, so this suggestion is likely far too high: on the flowers 0.23-0.39 trained "
                    f"worse than 1e-3 (docs/diagnosis.md). The paper's SGD rate is 0.01 (--recipe paper)")
    if cfg.lr_mode == "find":  # a folder that holds a model needs --overwrite to train in it
        held = cfg.overwrite or any((out / name).exists() for name in ("best.pth", "last.pth"))
        machine.log(f"train with it: {command_line(cfg, lr=found.suggestion, overwrite=held or None)}")
    if machine.is_main:  # after the suggestion: a disk too full for the plot loses only the plot
        plot(found, out / PLOT)
        machine.log(f"the loss against the learning rate: {out / PLOT}")
    return found.suggestion


def range_test(cfg: Config, machine: Machine, trainer: Trainer, loaders: Loaders, step: TrainStep,
               seconds: float = 0.0) -> RangeTest:
    """Train with ``step`` (train.py's training step), the learning rate of step i at
    START_LR * (END_LR / START_LR) ** (i / (steps - 1)); ``seconds`` > 0: as many steps as fit
    (at least MIN_STEPS). Under torchrun every rank sees the mean loss of all, so all stop together."""
    trainer.model.train()
    size = cfg.img_size_start or cfg.train_size_end  # what the first epochs train at
    steps, smoothed, lowest = STEPS, 0.0, math.inf
    lrs, losses = [], []
    batches = _batches(cfg, machine, loaders, size)
    if seconds:
        t0 = time.perf_counter()
        for _ in range(TIMING_STEPS):
            _step(cfg, machine, trainer, step, next(batches), START_LR)
        synchronize(machine.device)
        per_step = (time.perf_counter() - t0) / TIMING_STEPS
        steps = broadcast(machine, max(MIN_STEPS, min(STEPS, int(seconds / per_step))))  # one count for all ranks
    for i in range(steps):
        lr = START_LR * (END_LR / START_LR) ** (i / (steps - 1))
        loss = _step(cfg, machine, trainer, step, next(batches), lr)
        if not math.isfinite(loss):
            break
        smoothed = SMOOTHING * smoothed + (1 - SMOOTHING) * loss
        value = smoothed / (1 - SMOOTHING ** (i + 1))
        lrs.append(lr)
        losses.append(value)
        lowest = min(lowest, value)
        if value > BLOWN_UP * lowest:
            break
    return RangeTest(lrs, losses)


def _batches(cfg: Config, machine: Machine, loaders: Loaders, size: int):
    """Training batches at crop ``size``, epoch after epoch, each epoch seeded as training seeds it."""
    epoch = 0
    while True:
        start_epoch(cfg, loaders, epoch, machine.rank, size)
        yield from loaders.train
        epoch += 1


def _step(cfg: Config, machine: Machine, trainer: Trainer, step: TrainStep, batch, lr: float) -> float:
    """One training step at ``lr``; the loss before it (the mean over ranks)."""
    for group in trainer.optimizer.param_groups:
        group["lr"] = lr
    _, _, loss = step(cfg, machine, trainer, *batch)
    value = loss.detach().float()
    if machine.world > 1:
        torch.distributed.all_reduce(value)
        value /= machine.world
    return value.item()


def plot(found: RangeTest, path: Path) -> None:
    """The smoothed loss against the learning rate (log scale), the lowest and the suggestion marked."""
    fig = figures.new_figure(7, 4.5)
    ax = fig.subplots()
    ax.plot(found.lrs, found.losses)
    ax.set_xscale("log")
    mark = found.lowest if found.fell else found.flat_until
    ax.axvline(mark, color="grey", linestyle=":", label=found.describe())
    ax.axvline(found.suggestion, color="red", linestyle="--", label=f"suggested --lr {found.suggestion:g}")
    top = min(max(found.losses), 2 * found.losses[0])  # the blow-up would squash the curve
    ax.set(xlabel="learning rate", ylabel="training loss (smoothed)", ylim=(min(found.losses) * 0.95, top * 1.05),
           title=f"learning-rate range test: {len(found.lrs)} steps")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    figures.save_with_font_hint(fig, path)

"""How long a run trains, and at which crop sizes.

A ``Plan`` says how many epochs there are, the training crop size of each, and how many
optimizer steps the last one takes. ``--epochs`` fixes it directly; ``--budget`` fits it
to wall-clock time from measured costs, so that the learning rate reaches the end of its
schedule exactly when the time runs out (Li et al., "Budgeted Training: Rethinking Deep
Neural Network Training Under Resource Constraints", ICLR 2020).

Progressive resizing (``--img-size-start``) grows the crops linearly, in steps of 16 px,
from the start size to the final size between two fractions of the run (``--img-size-ramp``):
by default from the first epoch to 3/4 of the epochs, so the last quarter trains at its final
size; ``--recipe budget`` holds the small crops for the first 45% and grows them until 85%, as
FFCV's ImageNet recipes ramp late.

The planner itself (``fit_budget``) is plain arithmetic, tested with injected costs; the
functions after it measure the costs on this machine and re-plan after each epoch.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from alexnet import outputs, transforms
from alexnet.checkpoint import MIN_IMG_SIZE
from alexnet.errors import ArgumentError
from alexnet.loaders import Loaders, set_crop_size
from alexnet.machine import Machine, broadcast, synchronize
from alexnet.trainer import Trainer, TrainStep, throwaway_copy

if TYPE_CHECKING:  # settings imports this module (Resizing, parse_duration)
    from alexnet.settings import Config

MAX_EPOCHS = 100_000


@dataclass(frozen=True)
class Plan:
    epochs: int
    sizes: tuple[int, ...]  # training crop size of each epoch
    steps_per_epoch: int
    last_epoch_steps: int  # a budget's last epoch may stop early; otherwise steps_per_epoch

    @property
    def total_steps(self) -> int:
        return (self.epochs - 1) * self.steps_per_epoch + self.last_epoch_steps

    def steps_in(self, epoch: int) -> int:
        return self.last_epoch_steps if epoch == self.epochs - 1 else self.steps_per_epoch


@dataclass(frozen=True)
class Resizing:
    """The training crop sizes of a run: ``end`` throughout, or (progressive resizing) growing
    from ``start`` to ``end`` between the fractions ``ramp`` of the epochs."""
    start: int  # 0: no progressive resizing
    end: int
    ramp: tuple[float, float] = (0.0, 0.75)

    def sizes(self, epochs: int) -> tuple[int, ...]:
        """Crop size of each epoch."""
        if not self.start or self.start >= self.end:
            return (self.end,) * epochs
        first, last = max(0.0, self.ramp[0] * epochs - 1), self.ramp[1] * epochs - 1  # epoch indices
        sizes = []
        for epoch in range(epochs):
            grown = min(1.0, max(0.0, (epoch - first) / max(1.0, last - first)))
            size = self.start + grown * (self.end - self.start)
            sizes.append(min(self.end, max(self.start, round(size / 16) * 16)))
        return tuple(sizes)


def fixed_plan(epochs: int, resizing: Resizing, steps_per_epoch: int) -> Plan:
    """--epochs: every epoch whole."""
    return Plan(epochs, resizing.sizes(epochs), steps_per_epoch, steps_per_epoch)


@dataclass(frozen=True)
class Costs:
    """What one epoch costs on this machine, measured before training starts."""
    step_s: dict[int, float]  # seconds per training step (loading included) at the measured crop sizes
    val_s: float  # one validation pass
    epoch_overhead_s: float  # writing best/last.pth, metrics.csv and the plot

    def step_at(self, size: int) -> float:
        """A straight line in the pixel count, fitted to the measured sizes by least squares
        (a convolution's cost grows with the pixels; the fit smooths timing noise)."""
        xs, ys = [s * s for s in self.step_s], list(self.step_s.values())
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        spread = sum((x - mean_x) ** 2 for x in xs)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else 0.0
        if slope <= 0:  # noise hid the growth: cost in proportion to the pixels instead
            return mean_y * size * size / mean_x
        return max(mean_y + slope * (size * size - mean_x), 0.05 * mean_y)


def epoch_seconds(plan: Plan, epoch: int, costs: Costs) -> float:
    return plan.steps_in(epoch) * costs.step_at(plan.sizes[epoch]) + costs.val_s + costs.epoch_overhead_s


def plan_seconds(plan: Plan, costs: Costs, first_epoch: int = 0) -> float:
    """What the epochs from ``first_epoch`` on will take."""
    return sum(epoch_seconds(plan, e, costs) for e in range(first_epoch, plan.epochs))


def _longest_fitting(epochs: int, resizing: Resizing, steps_per_epoch: int, costs: Costs, seconds: float,
                     first_epoch: int) -> Plan | None:
    """The plan of ``epochs`` epochs with the longest last epoch that fits, or None."""
    sizes = resizing.sizes(epochs)
    whole = Plan(epochs, sizes, steps_per_epoch, steps_per_epoch)
    before_last = plan_seconds(whole, costs, first_epoch) - epoch_seconds(whole, epochs - 1, costs)
    left = seconds - before_last - costs.val_s - costs.epoch_overhead_s
    last = min(steps_per_epoch, math.floor(left / costs.step_at(sizes[-1])))
    return Plan(epochs, sizes, steps_per_epoch, last) if last >= 1 else None


def fit_budget(seconds: float, resizing: Resizing, steps_per_epoch: int, costs: Costs,
               first_epoch: int = 0) -> Plan | None:
    """The plan with the most optimizer steps whose epochs from ``first_epoch`` on fit in
    ``seconds``; None if not even one step (and its validation) fits."""
    def fits(epochs: int) -> Plan | None:
        return _longest_fitting(epochs, resizing, steps_per_epoch, costs, seconds, first_epoch)

    good = first_epoch + 1
    if fits(good) is None:
        return None
    bad = None
    while bad is None and good < MAX_EPOCHS:  # double until a plan no longer fits, then bisect
        probe = min(2 * good, MAX_EPOCHS)
        good, bad = (probe, None) if fits(probe) is not None else (good, probe)
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) is not None else (good, mid)
    return fits(good)  # the most epochs: also the most steps, a short last epoch included


def describe(plan: Plan, costs: Costs | None = None) -> str:
    sizes = f"{plan.sizes[0]} px" if len(set(plan.sizes)) == 1 else f"crops {plan.sizes[0]} -> {plan.sizes[-1]} px"
    last = "" if plan.last_epoch_steps == plan.steps_per_epoch else \
        f" (the last one {plan.last_epoch_steps} of {plan.steps_per_epoch} steps)"
    text = f"{plan.epochs} epochs{last}, {plan.total_steps} steps, {sizes}"
    if costs:
        steps = ", ".join(f"{t:.2f} s/step at {s} px" for s, t in sorted(costs.step_s.items()))
        text += f"; measured {steps}, validation {costs.val_s:.1f} s, saving {costs.epoch_overhead_s:.1f} s per epoch"
    return text


def parse_duration(text: str) -> float:
    """'90s', '10m', '1h', '1h30m', '2.5m' or plain seconds ('600') -> seconds."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d*)?)h)?\s*(?:(\d+(?:\.\d*)?)m(?:in)?)?\s*(?:(\d+(?:\.\d*)?)s?)?\s*",
                         text.lower())
    if not match or not any(match.groups()):
        raise ArgumentError(f"--budget {text}: not a duration; write e.g. 90s, 10m, 1h or 1h30m")
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    seconds = 3600 * h + 60 * m + s
    if not 0 < seconds < 365 * 86400:
        raise ArgumentError(f"--budget {text}: must be more than 0 s and less than a year")
    return seconds


def choose_plan(cfg: Config, machine: Machine, trainer: Trainer, loaders: Loaders, step: TrainStep,
                started: float) -> tuple[Plan, Costs | None]:
    """--epochs as given; or, with --budget, the most steps that end when the time does,
    measured with ``step`` (train.py's training step)."""
    steps = len(loaders.train)
    if not cfg.budget:
        return fixed_plan(cfg.epochs, cfg.resizing, steps), None
    costs = measure_costs(cfg, machine, trainer, loaders, step)
    left = budget_seconds_left(cfg, started)
    chosen = fit_budget(left, cfg.resizing, steps, costs)
    if chosen is None or chosen.epochs == 1 and chosen.last_epoch_steps < steps:
        whole = plan_seconds(fixed_plan(1, cfg.resizing, steps), costs)
        raise ArgumentError(f"--budget {cfg.budget:g}s: one epoch takes about {whole:.0f} s here and setting up "
                            f"took {time.monotonic() - started:.0f} s; give at least "
                            f"{math.ceil(whole + time.monotonic() - started) + 1} s")
    return broadcast(machine, (chosen, costs))


def budget_seconds_left(cfg: Config, started: float) -> float:
    """What is left of --budget, keeping 1% and a second for writing the summary and exiting."""
    return 0.99 * cfg.budget - 1.0 - (time.monotonic() - started)


def measure_costs(cfg: Config, machine: Machine, trainer: Trainer, loaders: Loaders, step: TrainStep) -> Costs:
    """What an epoch will cost, measured on this machine before training: ``step`` on a
    throwaway copy of the trainer at the smallest, middle and largest crop size, a validation
    pass, and writing checkpoints."""
    measured = throwaway_copy(cfg, trainer)  # the run's own weights and optimizer stay untouched
    end = cfg.train_size_end
    sizes = sorted({s for s in (cfg.img_size_start, (cfg.img_size_start + end) // 2, end) if MIN_IMG_SIZE <= s <= end})
    step_s = {size: step_seconds(cfg, machine, measured, loaders, step, size) for size in sizes}
    model = measured.model.eval()
    t0, seen = time.perf_counter(), 0
    for images, _ in itertools.islice(loaders.val, 2):
        with torch.inference_mode(), machine.autocast():
            model(transforms.normalize(images.to(machine.device), cfg.mean, cfg.std))
        seen += len(images)
    synchronize(machine.device)
    val_s = (time.perf_counter() - t0) / max(seen, 1) * len(loaders.val.dataset)
    probe = Path(cfg.output_dir) / f"budget-probe{outputs.TMP_MARK}{os.getpid()}"
    t0 = time.perf_counter()
    outputs.save_torch(model.state_dict(), probe)
    saved_s = time.perf_counter() - t0
    probe.unlink()
    # a checkpoint holds the weights and the optimizer's one or two buffers per weight
    return Costs(step_s, val_s, epoch_overhead_s=saved_s * (2 if cfg.opt == "sgd" else 3))


def step_seconds(cfg: Config, machine: Machine, measured: Trainer, loaders: Loaders, step: TrainStep,
                 size: int) -> float:
    """Median seconds of a training step at this crop size, batch loading included."""
    set_crop_size(loaders.train, size)
    measured.model.train()
    batches, times = iter(loaders.train), []
    for _ in range(min(4, len(loaders.train))):
        t0 = time.perf_counter()
        step(cfg, machine, measured, *next(batches))
        synchronize(machine.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:] or times)  # the first one warms up the kernels and the loader


def replan(cfg: Config, machine: Machine, state, row: dict, epoch_wall: float) -> None:
    """After each epoch of a budget run: the costs, corrected by what that epoch really took,
    give the plan for the time that is left (the epochs, their sizes, the last one's steps);
    if no further epoch fits, the run ends now rather than overrun. Short probes misjudge how
    the cost grows with the crop size, so a single correction would drift as the crops grow."""
    predicted = state.plan.steps_in(state.epoch - 1) * state.costs.step_at(row["crop_size"])
    factor = row["train_seconds"] / predicted
    saving = max(0.0, epoch_wall - row["seconds"])
    if state.epoch > 1:  # writing files varies from epoch to epoch (the first plot is slow): an average
        saving = (saving + state.costs.epoch_overhead_s) / 2
    costs = Costs({s: t * factor for s, t in state.costs.step_s.items()},
                       row["seconds"] - row["train_seconds"], saving)
    left = budget_seconds_left(cfg, state.started)
    new = fit_budget(left, cfg.resizing, state.plan.steps_per_epoch, costs, first_epoch=state.epoch)
    if new is None:
        new = dataclasses.replace(state.plan, epochs=state.epoch, sizes=state.plan.sizes[:state.epoch],
                                  last_epoch_steps=state.plan.steps_in(state.epoch - 1))
        machine.log(f"no further epoch fits in the {max(left, 0):.0f} s left of the budget: the run ends now")
    elif state.epoch == 1 or new.epochs != state.plan.epochs:
        machine.log(f"plan after epoch {state.epoch}: {describe(new, costs)}")
    state.plan, state.costs = broadcast(machine, (new, costs))

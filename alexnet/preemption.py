"""Stopping a run and going on exactly where it stopped: the signal handler (``Stop``),
the exception that ends the loop (``TrainingStopped``), each epoch's reseeding, and the
mid-epoch position a checkpoint keeps (every rank's random state, the batches to skip)."""
import os
import random
import signal
import sys
from pathlib import Path

import torch

from alexnet import device_data
from alexnet.errors import STOP_SIGNALS
from alexnet.loaders import Loaders, set_crop_size
from alexnet.machine import Machine
from alexnet.settings import Config


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
    save_position), or the loss stopped being a number or exploded (``diverged``: the same
    settings would diverge again)."""

    def __init__(self, message: str, code: int, position: dict | None = None, diverged: bool = False):
        super().__init__(message)
        self.code, self.position, self.diverged = code, position, diverged


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


def how_to_go_on(cfg: Config, saved_epoch: int, saved_steps: int, best_epoch: int, diverged: bool) -> str:
    """The end of a stopped run's line: what last.pth holds and the command that goes on."""
    last = Path(cfg.output_dir) / "last.pth"
    if diverged:  # the same settings diverge again: resuming or rerunning cannot help
        if not saved_epoch:
            return f"no checkpoint was written; run again with a lower learning rate: the same command with " \
                   f"--lr {cfg.lr / 10:g}"
        return (f"best.pth and last.pth keep epoch {best_epoch} and {saved_epoch}, from before; run again "
                f"with a lower learning rate: the same command with --lr {cfg.lr / 10:g} --overwrite")
    if not saved_epoch and not saved_steps:
        return "no checkpoint was written: run the same command again"
    held = f"epoch {saved_epoch}" + (f" and {saved_steps} steps of epoch {saved_epoch + 1}" if saved_steps else "")
    return f"last.pth holds {held}: resume with  python train.py --resume {last}"


def one_line(e: Exception) -> str:
    """An error's message; one raised in a DataLoader worker arrives wrapped in the worker's
    traceback, whose last line is the message itself."""
    text = str(e).strip()
    if "Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith(type(e).__name__) else last
    return text

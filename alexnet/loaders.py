"""The loaders around train.py's two ImageFolder datasets: sharded per rank under torchrun,
balanced as --balance says, and built either by DataLoader (cropped per image, in the order
of a SeededSampler) or on the device a batch at a time (device_data)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from alexnet import class_balance, datasets, device_data, folders, lookalike
from alexnet.datasets import CachedImageFolder
from alexnet.errors import DataError
from alexnet.machine import Machine, cache_budget, device_cache_budget, eval_batch_size

if TYPE_CHECKING:  # settings imports budget, which builds on this module
    from alexnet.settings import Config


@dataclass(frozen=True)
class Loaders:
    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    classes: list[str]
    generator: torch.Generator  # draws the training order (this rank's); reseeded each epoch
    counts: list[int]  # training images per class
    balance: str  # --balance as resolved for these counts: none, sampler or loss
    notes: list[str]  # what the data looks like: class counts, imbalance, copies across the splits
    val_counts: list[int]  # validation images per class (all ranks')
    copies: int = 0  # validation images that copy training images (rank 0 counts them)


def cache_policy(cfg: Config) -> datasets.CachePolicy:
    """Where and how much train.py's datasets cache (--cache-dir, --cache-mem, --bad-images)."""
    return datasets.CachePolicy(cfg.cache_dir, cache_budget(cfg.cache_mem), cfg.bad_images, quiet=cfg.quiet)


@contextmanager
def data_ready(cfg: Config, machine: Machine):
    """Around building the datasets: --demo draws its pictures first; with torchrun, rank 0
    decodes first and the others then read its cache; a data folder that is missing gets the
    commands that make one; splits that are one folder are refused on every rank."""
    if os.path.isdir(cfg.data):
        folders.separate_splits(cfg.data, ("train", "val"))
    if cfg.demo and machine.is_main:
        from alexnet import shapes  # only the demo draws pictures (ImageDraw stays out of predict.py)

        machine.log(f"demo data: {shapes.make_shapes(cfg.data)}")
    ranks_wait = machine.world > 1 and torch.distributed.is_initialized()  # (a test builds a rank's data alone)
    if ranks_wait and not machine.is_main:
        torch.distributed.barrier()
    try:
        yield
    except DataError as e:
        if os.path.isdir(cfg.data):
            raise
        raise DataError(f"{e}. Get the flower photos with `python data_set/download.py` (or split your "
                        f"own with `python data_set/split_data.py SRC`), or try `python train.py --demo`") from None
    if ranks_wait and machine.is_main:
        torch.distributed.barrier()


def make_loaders(cfg: Config, machine: Machine, train_set: CachedImageFolder, val_set: CachedImageFolder) -> Loaders:
    """The training and validation loaders of the two datasets, and what train.py reports about them."""
    classes = train_set.classes
    if val_set.classes != classes:
        raise DataError(f"{val_set.root}: classes {val_set.classes} differ from {train_set.root}: {classes}")
    if len(classes) < 2:
        raise DataError(f"{train_set.root}: only one class folder ({classes[0]}); a classifier needs at least two")
    counts = class_counts(train_set.targets, len(classes))
    balance = class_balance.balance_mode(cfg.balance, counts)
    val_counts = class_counts(val_set.targets, len(classes))
    notes, copies = [], 0  # rank 0 only: the other ranks need not read the files again
    if machine.is_main:
        copies, copy_notes = lookalike.copies_across(train_set.samples, val_set.samples)
        notes = eval_crop_warning(cfg) + class_balance.describe_classes(classes, counts, balance) + copy_notes
    shard = range(machine.rank, len(train_set), machine.world)  # with torchrun, each rank's own images
    val_batch = cfg.val_batch_size or eval_batch_size(machine.device)
    val_ds = val_set
    if machine.world > 1:
        val_ds = torch.utils.data.Subset(val_set, range(machine.rank, len(val_set), machine.world))
    on_device, why = device_batches_decision(cfg, machine, train_set, shard)
    machine.log(f"training batches: {why}")
    if on_device:
        resident = device_data.ResidentImages([train_set.images[i] for i in shard],
                                              [train_set.targets[i] for i in shard], machine.device)
        train = device_data.DeviceBatches(train_set, resident, cfg.batch_size, cfg.crop_scale, cfg.img_size,
                                          drop_last=len(shard) > cfg.batch_size)
        val = device_data.DeviceTensorBatches(val_ds, machine.device, val_batch)
        return Loaders(train, val, classes, train.generator, counts, balance, notes, val_counts, copies)
    workers = cfg.workers if cfg.workers >= 0 else auto_workers(machine.device, train_set.cached)
    generator = torch.Generator()
    if balance == "sampler":  # each class drawn equally often, from this rank's share of the images
        sampler = class_balance.BalancedSampler(shard, [1 / counts[train_set.targets[i]] for i in shard], generator)
    elif machine.world > 1:
        sampler = torch.utils.data.DistributedSampler(train_set, machine.world, machine.rank, shuffle=True,
                                                      seed=cfg.seed)
    else:
        sampler = torch.utils.data.RandomSampler(train_set, generator=generator)
    sampler = datasets.SeededSampler(sampler)
    # progressive resizing changes the crop size each epoch: workers must start afresh to see it
    common = dict(num_workers=workers, pin_memory=machine.device.type == "cuda",
                  prefetch_factor=4 if workers > 0 else None, persistent_workers=workers > 0 and not cfg.img_size_start)
    # drop a last small batch only when there is a full one: a rank's share may be smaller than a batch
    # the loader's own generator only seeds its workers (their draws do not matter: SeededSampler); the order's
    # generator is never touched by it, so the order is the same with or without (persistent) workers
    train = torch.utils.data.DataLoader(train_set, cfg.batch_size, sampler=sampler,
                                        drop_last=len(sampler) > cfg.batch_size,
                                        generator=torch.Generator().manual_seed(cfg.seed), **common)
    val = torch.utils.data.DataLoader(val_ds, val_batch, shuffle=False, **common)
    return Loaders(train, val, classes, generator, counts, balance, notes, val_counts, copies)


def eval_crop_warning(cfg: Config) -> list[str]:
    """A validation centre crop that keeps less than half of the image, while training crops see more."""
    kept = (cfg.img_size / cfg.val_resize) ** 2 if cfg.val_resize else 1.0
    if kept >= 0.5:
        return []
    return [f"warning: validation keeps the centre {cfg.img_size} px of images resized to {cfg.val_resize} px, "
            f"{kept:.0%} of their area, while training crops cover {cfg.crop_scale[0]:.0%}-"
            f"{cfg.crop_scale[1]:.0%}; lower --val-resize"]


def class_counts(targets: list[int], num_classes: int) -> list[int]:
    """Images per class, from a dataset's targets."""
    counts = [0] * num_classes
    for target in targets:
        counts[target] += 1
    return counts


def train_cache_side(cfg: Config) -> int:
    """The short side the training images are cached at: 256 for 224 px crops, room for the crop."""
    return max(cfg.img_size * 8 // 7, cfg.val_resize)


def device_batches_decision(cfg: Config, machine: Machine, train_ds, shard: range) -> tuple[bool, str]:
    """Whether training batches are built on the device (device_data.py), and the log line why."""
    per_image = f"cropped per image by {'the main process' if cfg.workers <= 0 else 'DataLoader workers'}"
    if cfg.device_batches == "off":
        return False, f"{per_image} (--device-batches off)"
    if not train_ds.cached:
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


def set_crop_size(loader, size: int) -> None:
    """The training crop size from now on (progressive resizing; the budget's measurements).
    Loader workers see it because they start afresh each epoch (make_loaders)."""
    if isinstance(loader, device_data.DeviceBatches):
        loader.crop_size = size
    else:
        loader.dataset.transform.size = size

"""The training and validation images as torchvision ImageFolders (``CachedImageFolder``):
torchvision's interface (classes, class_to_idx, samples, targets, transform, loader) over the
project's safe folder walk (alexnet/folders.py) and a decode-once cache.

Each image is decoded once, its ``pre_transform`` applied (training: the short side to 256
px, room for the crops; validation: the whole evaluation transform), and kept in memory as
uint8; each epoch then only runs ``transform`` (the training augmentation) on the cached
pixels. The cache is also saved to disk, keyed by the files' names, sizes and modification
times, so a second run starts at once and a changed file rebuilds it. Data that does not fit
the memory budget is decoded per epoch instead. Unreadable images are all reported before
training starts (or left out with --bad-images skip)."""
import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch
from torchvision.datasets import DatasetFolder

from alexnet import folders, outputs
from alexnet.decoding import decode_rgb
from alexnet.errors import DataError

CACHE_VERSION = 2


class Preparation(Protocol):
    """What is done to an image once, at decode time (ShortSide, EvalTransform)."""
    key: str

    def cached_bytes(self, path: str) -> int: ...

    def __call__(self, img: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class CachePolicy:
    folder: str | None  # where the decoded images are saved between runs (None: not saved)
    mem_budget: int  # bytes of RAM the decoded images may take; 0: decode every epoch
    bad_images: str = "error"  # unreadable images: "error" (refuse) or "skip"
    quiet: bool = False


def fingerprint(paths: Sequence[str], *extra: object) -> str:
    """Changes whenever a file is added, removed, renamed, rewritten or touched."""
    h = hashlib.sha256(repr((CACHE_VERSION, extra)).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def decode_all(paths: Sequence[str], prepare: Callable[[torch.Tensor], torch.Tensor], keep: bool,
               desc: str, quiet: bool = False) -> tuple[list[torch.Tensor | None], list[tuple[str, str]]]:
    """Decode every file once (in threads: the decoders release the GIL). Returns the
    prepared images (None where unreadable, or for all if not ``keep``) and the bad files."""
    from tqdm import tqdm

    def work(path: str) -> tuple[torch.Tensor | None, str | None]:
        try:
            img = prepare(decode_rgb(path))
        except DataError as e:
            return None, str(e)
        return (img if keep else None), None

    images, bad = [], []
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one image per thread beats one image on all threads
    try:
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            for path, (img, err) in zip(paths, tqdm(pool.map(work, paths), total=len(paths), desc=desc,
                                                     disable=True if quiet else None, leave=False)):
                images.append(img)
                if err:
                    bad.append((path, err[len(path) + 2:] if err.startswith(f"{path}: ") else err))
    finally:
        torch.set_num_threads(torch_threads)
    return images, bad


def _identity(img: torch.Tensor) -> torch.Tensor:
    return img


def load_cache(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a cache file is disposable: any damage just means rebuild
        return None
    return blob if isinstance(blob, dict) and blob.get("key") == key else None


class SeededSampler(torch.utils.data.Sampler):
    """The training order of ``sampler`` as (index, seed) keys: a batch's random crops, flips
    and augmentation are drawn from the seed of its first key, a seed of the epoch and that
    position in it (``batch_keys``), never from a process's running random state. So the crops
    are the same with or without DataLoader workers, and an epoch can start at any batch
    (``skip``, a run resumed mid-epoch) with the crops an uninterrupted epoch draws there."""

    def __init__(self, sampler: torch.utils.data.Sampler):
        self.sampler, self.epoch_seed, self.skip = sampler, 0, 0

    def set_epoch(self, epoch: int, seed: int) -> None:
        self.epoch_seed, self.skip = seed, 0
        if hasattr(self.sampler, "set_epoch"):  # DistributedSampler: its order depends on the epoch
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) - self.skip

    def __iter__(self):
        for position, index in enumerate(self.sampler):
            if position >= self.skip:
                yield index, (self.epoch_seed * 1_000_003 + position) % 2**63


def batch_keys(keys: list) -> tuple[list[int], torch.Generator]:
    """The image indices of a batch of keys (indices, or SeededSampler's (index, seed)), and the
    generator its augmentation draws from: seeded from the first key, else the global one."""
    if keys and isinstance(keys[0], tuple):
        return [i for i, _ in keys], torch.Generator().manual_seed(keys[0][1])
    return list(keys), torch.random.default_generator

class CachedImageFolder(DatasetFolder):
    """torchvision's ImageFolder over decoded, cached images. ``transform`` (a TrainAugment,
    or None) runs on each batch (``__getitems__``, what a DataLoader calls) with a generator
    seeded from the batch's first key: an index, or (index, seed) from a SeededSampler.
    ``class_to_idx`` given: only those classes, with those indices (evaluate.py labels a
    test folder with the model's class indices)."""

    def __init__(self, root: str, policy: CachePolicy, pre_transform: Preparation, transform: Callable | None = None,
                 log: Callable[[str], None] = print, class_to_idx: dict[str, int] | None = None):
        self.policy, self.pre_transform, self.log, self.wanted = policy, pre_transform, log, class_to_idx
        super().__init__(root, loader=decode_rgb, transform=transform)
        self.images, self.bad = self._decode_once()
        self.targets = [t for _, t in self.samples]

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """The class folders, found by folders.find_classes (which refuses what ImageFolder
        would silently take: links out of the folder, names that cannot be printed, ...)."""
        found = folders.find_classes(directory, self.log)
        if self.wanted is None:
            return found, {name: i for i, name in enumerate(found)}
        classes = sorted((c for c in found if c in self.wanted), key=self.wanted.__getitem__)
        return classes, {c: self.wanted[c] for c in classes}

    def make_dataset(self, directory: str, class_to_idx: dict[str, int], extensions=None, is_valid_file=None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        """(path, class index) of every image file, sorted, as ImageFolder lists them; the
        files that are not images are counted for the log line."""
        names = list(class_to_idx)
        samples, self.listing = folders.class_samples(directory, names)
        return [(path, class_to_idx[names[t]]) for path, t in samples]

    def _decode_once(self) -> tuple[list[torch.Tensor] | None, list[tuple[str, str]]]:
        """Every image decoded and pre-transformed (or read from the cache file); the images
        held in memory if they fit the policy's budget (else None: decoded per epoch), and
        the unreadable files, which leave ``samples``."""
        name = os.path.basename(os.path.normpath(self.root))
        skipped = folders.describe_skipped(self.listing)
        if skipped:
            self.log(f"{name}: {skipped}")
        paths = [p for p, _ in self.samples]
        need = sum(self.pre_transform.cached_bytes(p) for p in paths) if self.policy.mem_budget > 0 else math.inf
        keep = need <= self.policy.mem_budget
        blob = load_or_decode(self.root, paths, self.pre_transform, keep, self.policy)
        bad = [tuple(b) for b in blob["bad"]]
        report_bad(bad, self.policy.bad_images, self.log)
        bad_paths = {p for p, _ in bad}
        self.samples = [s for s in self.samples if s[0] not in bad_paths]
        left = {t for _, t in self.samples}
        for cls, index in self.class_to_idx.items():
            if index not in left:
                raise DataError(f"{os.path.join(self.root, cls)}: no readable images left in this class after skipping")
        if keep:
            self.log(f"{name}: {len(self.samples)} images cached in memory ({need / 2**20:.0f} MiB)")
        else:
            why = "caching off" if self.policy.mem_budget <= 0 else \
                f"needs {need / 2**30:.1f} GiB > budget {self.policy.mem_budget / 2**30:.1f} GiB"
            self.log(f"{name}: {len(self.samples)} images decoded every epoch ({why})")
        return (blob["images"] if keep else None), bad

    @property
    def cached(self) -> bool:
        return self.images is not None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitems__(self, keys: list) -> list[tuple[torch.Tensor, int]]:
        indices, generator = batch_keys(keys)
        if self.cached:
            batch = [self.images[i] for i in indices]
        else:
            batch = [self.pre_transform(self.loader(self.samples[i][0])) for i in indices]
        return list(zip(self.transform(batch, generator) if self.transform else batch,
                        [self.targets[i] for i in indices]))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        return self.__getitems__([key])[0]


def load_or_decode(root: str, paths: list[str], prepare: Preparation, keep: bool, policy: CachePolicy) -> dict:
    """{"bad": [(path, why)], "images": decoded images or None}: from the cache file when it
    matches these files and this preparation, else decoded now (and saved)."""
    name = os.path.basename(os.path.normpath(root))
    key = fingerprint(paths, prepare.key)
    stem = f"{name}-{hashlib.sha256(os.path.abspath(root).encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
    cache_file = Path(policy.folder) / f"{stem}-{key}.pt" if policy.folder else None
    blob = load_cache(cache_file, key) if cache_file else None
    if blob is not None and (blob["images"] is not None or not keep):
        return blob
    images, bad = decode_all(paths, prepare if keep else _identity, keep, f"decoding {name}", policy.quiet)
    blob = {"key": key, "bad": [list(b) for b in bad], "images": [i for i in images if i is not None] if keep else None}
    if cache_file:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        for old in cache_file.parent.glob(f"{stem}-*.pt"):
            old.unlink()
        outputs.save_torch(blob, cache_file)
    return blob


def report_bad(bad: list[tuple[str, str]], policy: str, log: Callable[[str], None]) -> None:
    if not bad:
        return
    lines = [f"  {p}: {why}" for p, why in bad]
    if policy == "skip":
        log(f"skipping {len(bad)} unreadable image(s):\n" + "\n".join(lines))
    elif len(bad) == 1:
        raise DataError(f"{bad[0][0]}: {bad[0][1]}; fix or remove it, or pass --bad-images skip")
    else:
        raise DataError(f"{len(bad)} unreadable image(s); fix or remove them, or pass --bad-images skip:\n"
                        + "\n".join(lines))

"""The data pipeline: decoding, the bad-image scan, the decode-once cache, augmentation,
and the evaluation transform shared by validation, evaluate.py and predict.py.

Training images are decoded once (torchvision's libjpeg-turbo decoder), shrunk so the
short side is ``cache_size`` px, and kept in memory as uint8; each epoch only crops,
flips and normalises them. The cache is also saved to disk, keyed by the files' names,
sizes and modification times, so a second run starts at once and a changed file
rebuilds it. Data that does not fit the memory budget is decoded per epoch instead.

Every decoder applies the EXIF orientation (phone photos store their rotation there),
so training, validation and prediction all see the same upright pixels.

This module imports only torch and Pillow at the top: ``predict.py`` uses it and
should not pay the second it takes to import torchvision.
"""
import functools
import hashlib
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from alexnet import folders, images, outputs
from alexnet.errors import DataError

CACHE_VERSION = 2
# torchvision 0.29 deprecates its decoders in favour of TorchCodec; until they go, they are
# the fastest here, and decode_rgb falls back to Pillow (bit-identical output) without them.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")


# ---------------------------------------------------------------- decoding
def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB Pillow image as uint8 CHW."""
    pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return pixels.view(img.height, img.width, 3).permute(2, 0, 1).contiguous()


def rgb_from_pil(img: Image.Image, name: str) -> torch.Tensor:
    """Any image Pillow reads, upright (EXIF), as uint8 RGB CHW (images.upright_rgb)."""
    return pil_to_tensor(images.upright_rgb(img, name))


def open_rgb(path: str) -> torch.Tensor:
    """Decode with Pillow (the path predict.py takes: no torchvision import)."""
    return pil_to_tensor(images.open_rgb(path))


def decode_rgb(path: str) -> torch.Tensor:
    """TorchCodec's decoders for 8-bit JPEG and PNG (bit-identical to Pillow's, EXIF orientation
    included, and faster: bench.py), Pillow for everything else (16-bit samples too), and for
    all of it where TorchCodec is missing or cannot load (tests/test_inputs.py compares them)."""
    decoders = codec_decoders()
    with images.open_image(path) as img:
        if images.REDUCED in img.info:  # a JPEG too big to decode whole: Pillow reads it at a smaller scale
            return rgb_from_pil(img, path)
        decoder = decoders.get(img.format) if img.mode in ("RGB", "L", "RGBA", "LA", "P") else None
    if decoder is None:
        return open_rgb(path)
    try:
        with open(path, "rb") as f:
            decoded = decoder(f.read(), mode="RGB", output_dtype="auto")
    except (OSError, RuntimeError, ValueError):
        return open_rgb(path)  # raises a DataError naming the file if Pillow cannot read it either
    # a 48-bit PNG decodes to uint16 here ("auto"); Pillow's scaling to 8 bits is the one every path uses
    return decoded if decoded.dtype == torch.uint8 else open_rgb(path)


def codec_decoders() -> dict:
    """Pillow's format name -> TorchCodec's decoder; empty where TorchCodec is missing or its
    library does not load (a build for another torch)."""
    global _CODEC_DECODERS
    if _CODEC_DECODERS is None:
        try:
            from torchcodec.decoders import decode_jpeg, decode_png
            _CODEC_DECODERS = {"JPEG": decode_jpeg, "PNG": decode_png}
        except Exception:  # ImportError, or the native library's own load error
            _CODEC_DECODERS = {}
    return _CODEC_DECODERS


_CODEC_DECODERS: dict | None = None


# ---------------------------------------------------------------- tensor transforms
def resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 CHW (or NCHW) image, as ``transforms.v2.Resize``:
    on the CPU torch resizes uint8 directly, elsewhere through float32 (tests/test_data.py
    compares both with torchvision)."""
    batch = img if img.dim() == 4 else img[None]
    if tuple(batch.shape[-2:]) == tuple(size):
        return img
    direct = batch.device.type == "cpu"
    out = F.interpolate(batch if direct else batch.float(), size=size, mode="bilinear", antialias=True,
                        align_corners=False)
    if not direct:
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out if img.dim() == 4 else out[0]


def resize_short(img: torch.Tensor, short: int) -> torch.Tensor:
    """Resize so the short side is ``short`` px (torchvision's ``Resize(short)``); a very
    elongated image first loses the ends of its long side beyond MAX_ASPECT."""
    h, w = img.shape[-2:]
    keep_h, keep_w, new_h, new_w = images.resized_sides(h, w, short)
    return resize(center_crop_hw(img, keep_h, keep_w), (new_h, new_w))


def center_crop_hw(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The centre h x w px, placed as ``transforms.v2.CenterCrop`` places it (the image is at least that big)."""
    top, left = images.center_offsets(img.shape[-2], img.shape[-1], h, w)
    return img[..., top:top + h, left:left + w]


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    return center_crop_hw(img, size, size)


def five_crop(img: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [img[..., top:top + size, left:left + size] for top, left in images.five_crop_boxes(*img.shape[-2:], size)]


def ten_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The paper's test-time views: four corners and the centre, of the image and of its
    mirror image (``transforms.v2.TenCrop``'s views, stacked)."""
    return torch.stack(five_crop(img, size) + five_crop(img.flip(-1), size))


@dataclass(frozen=True)
class EvalTransform:
    """Validation and prediction preprocessing, one definition for every entry point.

    ``resize=0`` is the tutorial's ``Resize((size, size))``, which squashes the aspect
    ratio; otherwise the short side goes to ``resize`` and the centre ``size`` px are
    kept. ``tta`` keeps all ten crops instead (of a squashed ``eval_resize(size)`` square
    when ``resize=0``, so the ten views differ). Returns uint8 [3,H,W], or [10,3,H,W].
    """
    size: int = 224
    resize: int = 256
    tta: bool = False

    @property
    def views(self) -> int:
        return 10 if self.tta else 1

    @property
    def key(self) -> str:
        return repr(self)

    def cached_bytes(self, path: str) -> int:
        return 3 * self.size * self.size * self.views

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if not self.resize:
            side = images.eval_resize(self.size) if self.tta else self.size
            img = resize(img, (side, side))
            return ten_crop(img, self.size) if self.tta else img
        img = resize_short(img, max(self.resize, self.size))
        return ten_crop(img, self.size) if self.tta else center_crop(img, self.size).contiguous()


@dataclass(frozen=True)
class ShortSide:
    """The decode-time step of training images: short side to ``short`` px (picklable, so
    DataLoader workers started with ``spawn`` on Windows and macOS can receive it)."""
    short: int

    @property
    def key(self) -> str:
        return f"short{self.short}"

    def cached_bytes(self, path: str) -> int:
        """Bytes the image takes in the cache, from its header alone (0 if unreadable)."""
        try:
            with Image.open(path) as img:
                w, h = img.size
        except (OSError, ValueError, Image.DecompressionBombError):
            return 0
        _, _, new_h, new_w = images.resized_sides(h, w, self.short)
        return 3 * new_h * new_w

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return resize_short(img, self.short)


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              lighting: "Lighting | None" = None) -> torch.Tensor:
    """uint8 NCHW or N x views x CHW (on any device) -> float NCHW, channels_last, normalised,
    with optional PCA lighting. Runs wherever the batch is: on the GPU for CUDA training."""
    x = batch.flatten(0, 1) if batch.dim() == 5 else batch
    x = x.float().div_(255)
    if lighting is not None:
        x = lighting(x)
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s).contiguous(memory_format=torch.channels_last)


class Lighting:
    """AlexNet's PCA colour augmentation (paper section 4.1): each image gets
    ``eigvec @ (alpha * eigval)`` added to every pixel, ``alpha ~ N(0, std)`` per image,
    with eigenvalues/vectors of the RGB covariance of the training pixels (in [0, 1])."""

    def __init__(self, eigval: Sequence[float], eigvec: Sequence[Sequence[float]], std: float = 0.1):
        self.eigval = torch.tensor(eigval)
        self.eigvec = torch.tensor(eigvec)
        self.std = std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.std == 0:
            return x
        alpha = torch.randn(x.shape[0], 3) * self.std
        shift = (alpha * self.eigval) @ self.eigvec.T
        return x + shift.to(x.device, x.dtype).view(-1, 3, 1, 1)


def pca_basis(images: Iterable[torch.Tensor], pixels_per_image: int = 4096) -> tuple[list[float], list[list[float]]]:
    """Eigen-decomposition of the RGB covariance of (a sample of) the training pixels."""
    gen = torch.Generator().manual_seed(0)
    samples = []
    for img in images:
        flat = img.reshape(3, -1)
        idx = torch.randint(flat.shape[1], (min(pixels_per_image, flat.shape[1]),), generator=gen)
        samples.append(flat[:, idx].float() / 255)
    pix = torch.cat(samples, dim=1)
    eigval, eigvec = torch.linalg.eigh(torch.cov(pix))
    return eigval.clamp(min=0).tolist(), eigvec.tolist()


CROP_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect-ratio range (torchvision's default)


def train_augment(size: int, scale: tuple[float, float], aug: str) -> "TrainAugment":
    """The training augmentation: RandomResizedCrop + flip, then --aug (TrivialAugment or
    colour jitter)."""
    from torchvision.transforms import v2

    if aug == "trivialaugment":
        extra = v2.TrivialAugmentWide()
    elif aug == "colorjitter":
        extra = v2.ColorJitter(0.4, 0.4, 0.4)
    elif aug == "none":
        extra = None
    else:
        raise ValueError(f"unknown augmentation {aug!r}")
    return TrainAugment(size, scale, extra)


class TrainAugment:
    """The training augmentation of a batch of uint8 images: RandomResizedCrop boxes and
    horizontal flips for all of them drawn at once from ``generator`` (sample_boxes:
    torchvision's rules), each image cropped and resized by torchvision's own resized_crop
    (antialiased, as v2.RandomResizedCrop), then ``extra`` (--aug) on each. Drawn per batch
    because torchvision's transforms draw per image in tiny tensor operations on the global
    generator (measured: docs/performance.md, "Batch building")."""

    def __init__(self, size: int, scale: tuple[float, float], extra: Callable | None):
        self.size, self.scale, self.extra = size, scale, extra  # size changes between epochs (progressive resizing)

    def __repr__(self) -> str:
        return f"TrainAugment(size={self.size}, scale={self.scale}, extra={self.extra!r})"

    def __call__(self, images: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        from torchvision.transforms.v2 import functional as TF

        boxes = sample_boxes(torch.tensor([img.shape[-2:] for img in images]), self.scale, CROP_RATIO, generator)
        flips = (torch.rand(len(images), generator=generator) < 0.5).tolist()
        seeds = torch.randint(2**62, (len(images),), generator=generator).tolist() if self.extra else []
        out = []
        for i, (img, (top, left, height, width)) in enumerate(zip(images, boxes.tolist())):
            crop = TF.resized_crop(img, top, left, height, width, [self.size, self.size], antialias=True)
            crop = TF.horizontal_flip(crop) if flips[i] else crop
            out.append(seeded(self.extra, crop, seeds[i]) if self.extra else crop)
        return out


def sample_boxes(sizes: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float],
                 generator: torch.Generator, tries: int = 10) -> torch.Tensor:
    """RandomResizedCrop.get_params for a batch: (top, left, height, width) per image of
    (height, width) ``sizes``; the first of ``tries`` draws that fits, else the fallback
    (the whole image, its aspect ratio clamped to ``ratio``, centred). The same distribution
    as torchvision's (tests/test_device_data.py), not the same numbers for a seed."""
    device = sizes.device
    h, w = sizes[:, :1].double(), sizes[:, 1:].double()
    n = len(sizes)
    area = h * w * (torch.rand(n, tries, generator=generator, device=device, dtype=torch.float64)
                    * (scale[1] - scale[0]) + scale[0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(torch.rand(n, tries, generator=generator, device=device, dtype=torch.float64)
                       * (log_hi - log_lo) + log_lo)
    crop_w, crop_h = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (crop_w > 0) & (crop_w <= w) & (crop_h > 0) & (crop_h <= h)
    first = fits.double().argmax(dim=1, keepdim=True)
    crop_w, crop_h = crop_w.gather(1, first)[:, 0], crop_h.gather(1, first)[:, 0]
    h, w = h[:, 0], w[:, 0]
    top = torch.floor(torch.rand(n, generator=generator, device=device, dtype=torch.float64) * (h - crop_h + 1))
    left = torch.floor(torch.rand(n, generator=generator, device=device, dtype=torch.float64) * (w - crop_w + 1))
    # the fallback: as wide (or tall) as the image, the aspect ratio clamped into the range
    in_ratio = w / h
    fb_w = torch.where(in_ratio < ratio[0], w, torch.where(in_ratio > ratio[1], torch.round(h * ratio[1]), w))
    fb_h = torch.where(in_ratio < ratio[0], torch.round(w / ratio[0]), h)
    missed = ~fits.any(dim=1)
    crop_w, crop_h = torch.where(missed, fb_w, crop_w), torch.where(missed, fb_h, crop_h)
    top = torch.where(missed, torch.div(h - crop_h, 2, rounding_mode="floor"), top)
    left = torch.where(missed, torch.div(w - crop_w, 2, rounding_mode="floor"), left)
    return torch.stack([top, left, crop_h, crop_w], dim=1).long()


IMBALANCE_WARNING = 3.0  # largest class / smallest class from which train.py warns and --balance auto acts
AUTO_BALANCE = "loss"  # what --balance auto does then (why: docs/results.md, "Your own photos")


def imbalance(counts: list[int]) -> float:
    """The largest class's images over the smallest's (an empty class counts as one)."""
    return max(counts) / max(min(counts), 1)


def balance_mode(setting: str, counts: list[int]) -> str:
    """The --balance a run trains with: as given, or for auto, AUTO_BALANCE when the classes
    are IMBALANCE_WARNING:1 or more apart, else none."""
    if setting != "auto":
        return setting
    return AUTO_BALANCE if imbalance(counts) >= IMBALANCE_WARNING else "none"


class BalancedSampler(torch.utils.data.Sampler):
    """--balance sampler: torch's WeightedRandomSampler (with replacement) over some of the
    images, ``indices`` (this rank's share under torchrun), as many draws as images."""

    def __init__(self, indices: Sequence[int], weights: Sequence[float], generator: torch.Generator):
        self.indices = list(indices)
        self.inner = torch.utils.data.WeightedRandomSampler(weights, len(self.indices), replacement=True,
                                                            generator=generator)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return (self.indices[i] for i in self.inner)


def describe_classes(classes: list[str], counts: list[int], balance: str) -> list[str]:
    """The training images per class, in one line (compact for many classes), and a warning
    when the largest class has IMBALANCE_WARNING times the images of the smallest, saying what
    --balance (as resolved) does about it."""
    if len(classes) <= 12:
        lines = ["training images per class: " + ", ".join(f"{folders.printable(c)} {n}" for c, n in zip(classes, counts))]
    else:
        ordered = sorted(counts)
        lines = [f"training images per class: {len(classes)} classes, {ordered[0]}-{ordered[-1]} each "
                 f"(median {ordered[len(ordered) // 2]})"]
    most, least = max(range(len(counts)), key=counts.__getitem__), min(range(len(counts)), key=counts.__getitem__)
    ratio = imbalance(counts)
    if ratio >= IMBALANCE_WARNING:
        remedy = "--balance sampler or loss weighs the classes alike" if balance == "none" else \
            f"weighing the classes alike (--balance {balance})"
        lines.append(f"warning: class imbalance {ratio:.1f}:1 ({folders.printable(classes[most])} {counts[most]}, "
                     f"{folders.printable(classes[least])} {counts[least]} images); {remedy}")
    return lines


def copies_across(train: list[tuple[str, int]], val: list[tuple[str, int]]) -> tuple[int, list[str]]:
    """How many validation images copy training images, and a warning if any do: byte for
    byte (only files of the same size are read and hashed, each once), or resized and
    recompressed (perceptual hashes, up to lookalike.LOOK_LIMIT photos: a few seconds)."""
    from alexnet import lookalike

    @functools.cache
    def digest(path: str) -> str:
        with open(path, "rb") as f:
            return hashlib.sha1(f.read()).hexdigest()

    try:
        by_size: dict[int, list[str]] = {}
        for path, _ in train:
            by_size.setdefault(os.path.getsize(path), []).append(path)
        pairs = []
        for path, _ in val:
            candidates = by_size.get(os.path.getsize(path), [])
            if candidates:
                mine = digest(path)
                pairs += [(path, other) for other in candidates if digest(other) == mine]
    except OSError:  # a file that vanished: the data pipeline reports it in its own words
        return 0, []
    exact = {path for path, _ in pairs}
    near = set()
    if len(train) + len(val) <= lookalike.LOOK_LIMIT:
        near = {val[i][0] for i in lookalike.copied_across([p for p, _ in train], [p for p, _ in val])} - exact
    notes = []
    if pairs:
        notes.append(f"warning: {len(exact)} validation image(s) are byte-for-byte copies of training images (e.g. "
                     f"{folders.printable(pairs[0][0])} = {folders.printable(pairs[0][1])}): validation partly "
                     f"measures memory; python data_set/check.py DATA lists them")
    if near:
        notes.append(f"warning: {len(near)} validation image(s) look like resized or recompressed copies of training "
                     f"images (e.g. {folders.printable(min(near))}): validation partly measures memory; python "
                     f"data_set/check.py DATA lists them")
    return len(exact | near), notes


# ---------------------------------------------------------------- scanning and caching
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


def seeded(transform: Callable, img: torch.Tensor, seed: int) -> torch.Tensor:
    """``transform(img)`` with torchvision's global-generator draws taken from ``seed``; the
    process's own random state is left as it was. Only the CPU generator is touched: the
    transforms draw nothing on a GPU, and the model's dropout there keeps its sequence."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return transform(img)


def batch_keys(keys: list) -> tuple[list[int], torch.Generator]:
    """The image indices of a batch of keys (indices, or SeededSampler's (index, seed)), and the
    generator its augmentation draws from: seeded from the first key, else the global one."""
    if keys and isinstance(keys[0], tuple):
        return [i for i, _ in keys], torch.Generator().manual_seed(keys[0][1])
    return list(keys), torch.random.default_generator


class CachedImages(torch.utils.data.Dataset):
    """Decoded uint8 images held in memory; ``transform`` (a TrainAugment) runs on each batch
    (``__getitems__``, what a DataLoader calls). A key is an index, or (index, seed) from a
    SeededSampler."""

    def __init__(self, images: list[torch.Tensor], targets: list[int], transform: Callable | None = None):
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, keys: list) -> list[tuple[torch.Tensor, int]]:
        indices, generator = batch_keys(keys)
        batch = [self.images[i] for i in indices]
        return list(zip(self.transform(batch, generator) if self.transform else batch,
                        [self.targets[i] for i in indices]))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        return self.__getitems__([key])[0]


class DecodedImages(torch.utils.data.Dataset):
    """The per-epoch path: decode every time (for data that does not fit in memory)."""

    def __init__(self, samples: list[tuple[str, int]], prepare: Callable, transform: Callable | None = None):
        self.samples, self.prepare, self.transform = samples, prepare, transform
        self.targets = [t for _, t in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitems__(self, keys: list) -> list[tuple[torch.Tensor, int]]:
        indices, generator = batch_keys(keys)
        batch = [self.prepare(decode_rgb(self.samples[i][0])) for i in indices]
        return list(zip(self.transform(batch, generator) if self.transform else batch,
                        [self.targets[i] for i in indices]))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        return self.__getitems__([key])[0]


@dataclass
class Split:
    """One split (train, val or a test folder), ready for a DataLoader."""
    dataset: CachedImages | DecodedImages
    samples: list[tuple[str, int]]  # (path, class index) of every image in the data set, in order
    classes: list[str]
    bad: list[tuple[str, str]]  # (path, why) of the unreadable images left out with bad_images="skip"


def build_split(root: str, classes: list[str], prepare: Preparation, transform: Callable | None,
                policy: CachePolicy, log: Callable[[str], None]) -> Split:
    """One split as a Dataset, cached when it fits the policy's memory budget.

    Every file is decoded before training starts, so unreadable images are all reported
    at once; with ``bad_images="skip"`` they are left out, else a DataError lists them.
    """
    samples, listing = folders.class_samples(root, classes)
    name = os.path.basename(os.path.normpath(root))
    if folders.describe_skipped(listing):
        log(f"{name}: {folders.describe_skipped(listing)}")
    paths = [p for p, _ in samples]
    need = sum(prepare.cached_bytes(p) for p in paths) if policy.mem_budget > 0 else math.inf
    keep = need <= policy.mem_budget
    blob = load_or_decode(root, paths, prepare, keep, policy)
    bad = [tuple(b) for b in blob["bad"]]
    report_bad(bad, policy.bad_images, log)
    bad_paths = {p for p, _ in bad}
    samples = [s for s in samples if s[0] not in bad_paths]
    left = {t for _, t in samples}
    for index, cls in enumerate(classes):
        if index not in left:
            raise DataError(f"{os.path.join(root, cls)}: no readable images left in this class after skipping")
    if keep:
        dataset = CachedImages(blob["images"], [t for _, t in samples], transform)
        log(f"{name}: {len(dataset)} images cached in memory ({need / 2**20:.0f} MiB)")
    else:
        dataset = DecodedImages(samples, prepare, transform)
        why = "caching off" if policy.mem_budget <= 0 else \
            f"needs {need / 2**30:.1f} GiB > budget {policy.mem_budget / 2**30:.1f} GiB"
        log(f"{name}: {len(dataset)} images decoded every epoch ({why})")
    return Split(dataset, samples, classes, bad)


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

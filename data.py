"""The data pipeline: image decoding, the bad-image scan, the decode-once cache,
augmentation, the evaluation transform shared by validation and prediction, and the
synthetic shapes data set behind ``python train.py --demo``.

Training images are decoded once (torchvision's libjpeg-turbo decoder), shrunk so the
short side is ``cache_size`` px, and kept in memory as uint8; each epoch only crops,
flips and normalises them. The cache is also saved to disk, keyed by the files' names,
sizes and modification times, so a second run starts at once and a changed file
rebuilds it. Data that does not fit the memory budget is decoded per epoch instead.

This module imports only torch and Pillow at the top: ``predict.py`` uses it and
should not pay the second it takes to import torchvision.
"""
import hashlib
import math
import os
import random
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

# torchvision.datasets.folder.IMG_EXTENSIONS, repeated to keep torchvision out of predict.py
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CACHE_VERSION = 1
# torchvision 0.29 deprecates its decoders in favour of TorchCodec; until they go, they are
# the fastest here, and decode_rgb falls back to Pillow (bit-identical output) without them.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
# _check_header turns Pillow's bomb warning into an error itself (catch_warnings is not thread-safe)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class DataError(Exception):
    """A problem with the user's files, reported as one line without a traceback."""


def is_image_file(path: str) -> bool:
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


# ---------------------------------------------------------------- decoding
def _check_header(path: str) -> Image.Image:
    try:
        img = Image.open(path)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({_reason(e)})") from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:  # Pillow only warns between 1x and 2x its limit
        img.close()
        raise DataError(f"{path}: {img.width}x{img.height} exceeds Pillow's decompression-bomb limit of {limit} pixels")
    return img


def _reason(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return "not an image file" if "cannot identify image file" in text else text[:160]


def open_rgb(path: str) -> torch.Tensor:
    """Decode any image Pillow reads (CMYK, 16-bit, palette, RGBA, greyscale) to uint8 RGB CHW."""
    with _check_header(path) as img:
        try:
            if img.mode.startswith("I"):
                # 16-bit greyscale: Pillow's convert("RGB") clips instead of scaling
                img = img.point(lambda v: v / 256).convert("L")
            rgb = img.convert("RGB")
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"{path}: not a readable image ({_reason(e)})") from None
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return pixels.view(rgb.height, rgb.width, 3).permute(2, 0, 1).contiguous()


def decode_rgb(path: str) -> torch.Tensor:
    """torchvision's decoder for 8-bit JPEG/PNG (bit-identical to Pillow's, about 1.7x faster),
    Pillow for everything else."""
    try:
        from torchvision.io import ImageReadMode, decode_image, read_file
    except ImportError:
        return open_rgb(path)
    with _check_header(path) as img:
        fast = img.format in ("JPEG", "PNG") and img.mode in ("RGB", "L", "RGBA", "LA", "P")
    if not fast:
        return open_rgb(path)
    try:
        return decode_image(read_file(path), mode=ImageReadMode.RGB)
    except RuntimeError:
        return open_rgb(path)  # raises a DataError naming the file if Pillow cannot read it either


# ---------------------------------------------------------------- tensor transforms
def resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 CHW (or NCHW) image, as transforms.v2.Resize does."""
    batch = img if img.dim() == 4 else img[None]
    out = F.interpolate(batch.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out if img.dim() == 4 else out[0]


def resize_short(img: torch.Tensor, short: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    scale = short / min(h, w)
    return resize(img, (max(short, round(h * scale)), max(short, round(w * scale))))


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top:top + size, left:left + size]


def ten_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The paper's test-time views: four corners and the centre, and their mirror images."""
    h, w = img.shape[-2:]
    crops = [img[..., :size, :size], img[..., :size, w - size:], img[..., h - size:, :size],
             img[..., h - size:, w - size:], center_crop(img, size)]
    crops += [c.flip(-1) for c in crops]
    return torch.stack(crops)


@dataclass(frozen=True)
class EvalTransform:
    """Validation and prediction preprocessing, one definition for both.

    ``resize=0`` is the tutorial's ``Resize((size, size))``, which squashes the aspect
    ratio; otherwise the short side goes to ``resize`` and the centre ``size`` px are
    kept (or all ten crops with ``tta``). Returns uint8 [3,H,W], or [10,3,H,W] with tta.
    """
    size: int = 224
    resize: int = 256
    tta: bool = False

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if not self.resize:
            img = resize(img, (self.size, self.size))
            return ten_crop(img, self.size) if self.tta else img
        img = resize_short(img, max(self.resize, self.size))
        return ten_crop(img, self.size) if self.tta else center_crop(img, self.size).contiguous()


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


def train_augment(size: int, scale: tuple[float, float], extra: str = "none") -> Callable:
    """RandomResizedCrop + flip on uint8 tensors, optionally TrivialAugment or colour jitter.
    The crop comes first, so ``set_crop_size`` can change the output size between epochs."""
    from torchvision.transforms import v2

    ops = [v2.RandomResizedCrop(size, scale=scale, antialias=True), v2.RandomHorizontalFlip()]
    if extra == "trivialaugment":
        ops.append(v2.TrivialAugmentWide())
    elif extra == "colorjitter":
        ops.append(v2.ColorJitter(0.4, 0.4, 0.4))
    elif extra != "none":
        raise ValueError(f"unknown augmentation {extra!r}")
    return v2.Compose(ops)


def set_crop_size(augment: Callable, size: int) -> None:
    """Make a ``train_augment`` pipeline crop to ``size`` from now on (progressive resizing)."""
    augment.transforms[0].size = (size, size)


# ---------------------------------------------------------------- folders
def find_classes(root: str) -> list[str]:
    """Class folders of an ImageFolder root, skipping hidden ones (.ipynb_checkpoints, ...)."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: data folder not found")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class folders inside (expected {root}/<class>/<image>.jpg)")
    return classes


def image_folder(root: str, classes: list[str] | None = None):
    """torchvision's ImageFolder over ``root``, with our class list and file filter, and a
    one-line error for an empty class folder."""
    from torchvision import datasets

    class _Folder(datasets.ImageFolder):
        def find_classes(self, directory):
            names = classes or find_classes(directory)
            return names, {c: i for i, c in enumerate(names)}

    folder = _Folder(root, loader=decode_rgb, is_valid_file=is_image_file, allow_empty=True)
    counts = [0] * len(folder.classes)
    for _, target in folder.samples:
        counts[target] += 1
    empty = [c for c, n in zip(folder.classes, counts) if n == 0]
    if empty:
        raise DataError(f"{os.path.join(root, empty[0])}: class folder has no images "
                        f"({', '.join(IMG_EXTENSIONS)})")
    return folder


def fingerprint(paths: Sequence[str], *extra: object) -> str:
    """Changes whenever a file is added, removed, renamed, rewritten or touched."""
    h = hashlib.sha256(repr((CACHE_VERSION, extra)).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- scanning and caching
def decode_all(paths: Sequence[str], prepare: Callable[[torch.Tensor], torch.Tensor], keep: bool,
               desc: str, threads: int = 0, quiet: bool = False
               ) -> tuple[list[torch.Tensor | None], list[tuple[str, str]]]:
    """Decode every file once (in threads: the decoders release the GIL). Returns the
    prepared images (None where unreadable, or for all if not ``keep``) and the bad files."""
    from tqdm import tqdm

    def work(path: str) -> tuple[torch.Tensor | None, str | None]:
        try:
            img = prepare(decode_rgb(path))
        except DataError as e:
            return None, str(e)
        return (img if keep else None), None

    threads = threads or min(8, os.cpu_count() or 1)
    images, bad = [], []
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one image per thread beats one image on all threads
    try:
        with ThreadPoolExecutor(threads) as pool:
            for path, (img, err) in zip(paths, tqdm(pool.map(work, paths), total=len(paths), desc=desc,
                                                     disable=quiet, leave=False)):
                images.append(img)
                if err:
                    bad.append((path, err[len(path) + 2:] if err.startswith(f"{path}: ") else err))
    finally:
        torch.set_num_threads(torch_threads)
    return images, bad


def _identity(img: torch.Tensor) -> torch.Tensor:
    return img


def cached_size(path: str, short: int) -> int:
    """Bytes the image takes in the cache after its short side is brought to ``short`` px."""
    try:
        with Image.open(path) as img:
            w, h = img.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0
    scale = short / min(w, h)
    return 3 * max(short, round(w * scale)) * max(short, round(h * scale))


def load_cache(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a cache file is disposable: any damage just means rebuild
        return None
    return blob if isinstance(blob, dict) and blob.get("key") == key else None


def save_atomic(obj: object, path: Path) -> None:
    """torch.save to a temporary file, then rename: a reader or a crash never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class CachedImages(torch.utils.data.Dataset):
    """Decoded uint8 images held in memory; ``transform`` runs on each access."""

    def __init__(self, images: list[torch.Tensor], targets: list[int], transform: Callable | None = None):
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        return (self.transform(img) if self.transform else img), self.targets[i]


class DecodedImages(torch.utils.data.Dataset):
    """The per-epoch path: decode every time (for data that does not fit in memory)."""

    def __init__(self, samples: list[tuple[str, int]], prepare: Callable, transform: Callable | None = None):
        self.samples, self.prepare, self.transform = samples, prepare, transform
        self.targets = [t for _, t in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[i]
        img = self.prepare(decode_rgb(path))
        return (self.transform(img) if self.transform else img), target


def build_split(root: str, classes: list[str] | None, prepare: Callable, prepare_key: str,
                item_bytes: Callable[[str], int], transform: Callable | None, cache_dir: str | None,
                mem_budget: int, bad_images: str, log: Callable[[str], None], quiet: bool = False):
    """One split (train or val) as a Dataset, cached when it fits ``mem_budget`` bytes.

    Every file is decoded before training starts, so unreadable images are all reported
    at once; with ``bad_images="skip"`` they are left out, else a DataError lists them.
    """
    folder = image_folder(root, classes)
    paths = [p for p, _ in folder.samples]
    key = fingerprint(paths, prepare_key)
    name = os.path.basename(os.path.normpath(root))
    stem = f"{name}-{hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:8]}"
    cache_file = Path(cache_dir) / f"{stem}-{key}.pt" if cache_dir else None
    need = sum(item_bytes(p) for p in paths) if mem_budget > 0 else math.inf
    keep = need <= mem_budget
    blob = load_cache(cache_file, key) if cache_file else None
    if blob is None or (keep and blob["images"] is None):
        images, bad = decode_all(paths, prepare if keep else _identity, keep, f"decoding {name}", quiet=quiet)
        blob = {"key": key, "bad": [list(b) for b in bad],
                "images": [i for i in images if i is not None] if keep else None}
        if cache_file:
            for old in cache_file.parent.glob(f"{stem}-*.pt"):
                old.unlink()
            save_atomic(blob, cache_file)
    bad = [tuple(b) for b in blob["bad"]]
    report_bad(bad, bad_images, log)
    bad_paths = {p for p, _ in bad}
    samples = [s for s in folder.samples if s[0] not in bad_paths]
    if keep:
        dataset = CachedImages(blob["images"], [t for _, t in samples], transform)
        log(f"{name}: {len(dataset)} images cached in memory ({need / 2**20:.0f} MiB)")
    else:
        dataset = DecodedImages(samples, prepare, transform)
        why = "caching off" if mem_budget <= 0 else f"needs {need / 2**30:.1f} GiB > budget {mem_budget / 2**30:.1f} GiB"
        log(f"{name}: {len(dataset)} images decoded every epoch ({why})")
    return dataset, folder.classes


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


# ---------------------------------------------------------------- synthetic shapes (the demo)
SHAPES = ("circle", "cross", "square", "star", "triangle")


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
        pts = [(x * r * 0.75, y * r * 0.75) for x, y in pts]
    elif shape == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    elif shape == "star":
        pts = [((r if k % 2 == 0 else r * 0.4) * math.cos(k * math.pi / 5),
                (r if k % 2 == 0 else r * 0.4) * math.sin(k * math.pi / 5)) for k in range(10)]
    else:  # cross
        a, b = r, r * 0.3
        pts = [(b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b), (-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def draw_shape(shape: str, size: int, rng: random.Random) -> Image.Image:
    """One photo-like picture of a shape: random hue, size, position and rotation on a
    random gradient background, with clutter, blur and noise. The shape always stands out
    in brightness, as objects in photos do, so a small network learns it in minutes."""
    light = rng.random() < 0.5

    def colour(lo: int, hi: int) -> tuple[int, int, int]:
        return tuple(rng.randrange(lo, hi) for _ in range(3))

    bg = (0, 110) if light else (145, 256)
    # a gradient at a random angle: rotate one twice the size and keep its middle, so no corner shows
    img = Image.linear_gradient("L").resize((2 * size, 2 * size)).rotate(rng.uniform(0, 360))
    img = img.crop((size // 2, size // 2, size // 2 + size, size // 2 + size))
    img = Image.composite(Image.new("RGB", (size, size), colour(*bg)), Image.new("RGB", (size, size), colour(*bg)), img)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randrange(3)):  # distractor lines
        draw.line([(rng.uniform(0, size), rng.uniform(0, size)) for _ in range(2)], fill=colour(0, 256),
                  width=max(1, size // 64))
    r = rng.uniform(0.22, 0.4) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    fill = colour(*((150, 256) if light else (0, 105)))
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.0)))
    noise = Image.effect_noise((size, size), rng.uniform(5, 25)).convert("RGB")
    return Image.blend(img, noise, 0.1)


def make_shapes(root: str, train_per_class: int = 200, val_per_class: int = 50, size: int = 128,
                seed: int = 0) -> str:
    """Write a 5-class ImageFolder of shapes to ``root/{train,val}/<shape>/*.jpg``; kept
    if already complete (a ``.done`` marker), so it is generated once."""
    marker = Path(root) / ".done"
    spec = f"v2 {train_per_class} {val_per_class} {size} {seed}"
    if marker.is_file() and marker.read_text() == spec:
        return root
    rng = random.Random(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for shape in SHAPES:
            folder = Path(root) / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw_shape(shape, size, rng).save(folder / f"{shape}_{i:04d}.jpg", quality=90)
    marker.write_text(spec)
    return root

"""The tensor transforms of uint8 images: the evaluation transform shared by validation,
evaluate.py and predict.py (resize, centre crop, ten crops), the decode-time short side of
training images, the training augmentation (RandomResizedCrop boxes and flips drawn a batch
at a time), normalisation and the paper's PCA lighting.

Imports only torch and Pillow at the top (predict.py uses EvalTransform and normalize);
torchvision only inside the training augmentation."""
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from alexnet import images


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
    colour jitter); --aug off: neither crop nor flip, the whole image squashed to ``size``."""
    from torchvision.transforms import v2

    if aug == "off":
        return TrainAugment(size, scale, None, crop_flip=False)
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

    def __init__(self, size: int, scale: tuple[float, float], extra: Callable | None, crop_flip: bool = True):
        self.size, self.scale, self.extra = size, scale, extra  # size changes between epochs (progressive resizing)
        self.crop_flip = crop_flip

    def __repr__(self) -> str:
        return f"TrainAugment(size={self.size}, scale={self.scale}, extra={self.extra!r}, crop_flip={self.crop_flip})"

    def __call__(self, images: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        from torchvision.transforms.v2 import functional as TF

        if not self.crop_flip:
            return [TF.resize(img, [self.size, self.size], antialias=True) for img in images]
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


def seeded(transform: Callable, img: torch.Tensor, seed: int) -> torch.Tensor:
    """``transform(img)`` with torchvision's global-generator draws taken from ``seed``; the
    process's own random state is left as it was. Only the CPU generator is touched: the
    transforms draw nothing on a GPU, and the model's dropout there keeps its sequence."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return transform(img)

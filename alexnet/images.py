"""Reading images with Pillow the same way on every path, and the evaluation transform
without torch.

Every entry point (train.py, evaluate.py, predict.py, app.py, both model formats) opens
images through ``open_image`` and ``upright_rgb``: the decompression-bomb check, the EXIF
orientation phone photos carry, and the conversion of 16-bit, CMYK, palette and
transparent images to RGB. The geometry of the evaluation transform (how far to resize,
where to crop) is defined here once; ``transforms.EvalTransform`` applies it to torch tensors,
``EvalViews`` to Pillow images with numpy for the ONNX path of predict.py, which never
imports torch (tests/test_export.py holds the two to the same pixels, within rounding).
"""
import math
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin

from alexnet import folders
from alexnet.errors import DataError

TUTORIAL_MEAN = TUTORIAL_STD = (0.5, 0.5, 0.5)  # the tutorial's Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# A resized image keeps at most this long side / short side: a 1 x 10000 px strip would
# otherwise grow to 256 x 2,560,000 px. No crop of ours reaches beyond its centre part.
MAX_ASPECT = 4.0
REDUCED = "alexnet: decoded at 1/scale"  # the Pillow image's info key reduce_big_jpeg sets
# A JPEG over the pixel limit is decoded at the largest reduction that keeps this short side: more
# than any view needs (predict.py's figure draws 1024 px, the largest --img-size is 1024)
KEEP_SIDE = 1024
# check_pixel_count makes Pillow's warning between 1x and 2x its limit an error (or reduce_big_jpeg
# a smaller decode) itself: a filter set once, as catch_warnings is not thread-safe
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def reason(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return "not an image file" if "cannot identify image file" in text else text[:160]


def too_big(name: str, pixels: int) -> DataError:
    """The one wording of the one pixel limit, whichever check meets it."""
    return DataError(f"{name}: {pixels:,} pixels, over the {max_pixels():,} an image may have here (Pillow's "
                     f"decompression-bomb limit; a JPEG is read at 1/2 to 1/8 scale first, so up to 64 times that)")


def max_pixels() -> int:
    return Image.MAX_IMAGE_PIXELS or 0


def check_pixel_count(img: Image.Image, name: str) -> None:
    """Pillow's decompression-bomb limit, as an error on every path (Pillow itself only
    warns between 1x and 2x its limit)."""
    if max_pixels() and img.width * img.height > max_pixels():
        raise too_big(name, img.width * img.height)


def reduce_big_jpeg(img: Image.Image) -> None:
    """A JPEG over the limit (a 108-megapixel phone photo) is decoded at 1/2, 1/4 or 1/8 scale:
    libjpeg scales in the DCT (Pillow's draft mode), so memory stays bounded. The largest
    reduction that keeps a KEEP_SIDE short side is taken, else the least that fits the limit."""
    if not isinstance(img, JpegImagePlugin.JpegImageFile) or not max_pixels():
        return
    w, h = img.size
    if w * h <= max_pixels():
        return
    scale = next((s for s in (8, 4, 2) if min(w, h) // s >= KEEP_SIDE), None) or \
        next((s for s in (2, 4, 8) if -(-w // s) * -(-h // s) <= max_pixels()), None)
    if scale:
        img.draft(img.mode, (w // scale, h // scale))
        img.info[REDUCED] = scale


def open_image(path: str) -> Image.Image:
    """Pillow's image, header read and checked (a big JPEG set to decode at a reduced
    scale); DataError names the file if it is none (or is no regular file: a named pipe
    would block the reader for ever)."""
    folders.check_file(path, "image")
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as e:  # over twice Pillow's limit: only a JPEG can be read smaller
        img = open_big_jpeg(path, e)
    except Image.UnidentifiedImageError:
        img = open_unidentified(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({reason(e)})") from None
    try:
        reduce_big_jpeg(img)
        check_pixel_count(img, path)
    except DataError:
        img.close()
        raise
    return img


# the ISO base media file's brands of HEIC/HEIF photos (an iPhone's default), whatever their name
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")


def open_unidentified(path: str) -> Image.Image:
    """What Pillow alone cannot identify: a HEIC/HEIF photo (whatever its name), through
    pillow-heif's plugin, registered on the first such file so that no other path imports it;
    else a DataError that names a known format no decoder here reads, as the folder listings do."""
    with open(path, "rb") as f:
        head = f.read(12)
    if head[4:8] != b"ftyp" or head[8:12] not in HEIF_BRANDS:
        kind = folders.NO_DECODER.get(os.path.splitext(path)[1].lower())
        raise DataError(f"{path}: " + (f"a {kind} image, which no decoder here reads: convert it to JPEG or PNG"
                                       if kind else "not a readable image (not an image file)"))
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        raise DataError(f"{path}: a HEIC/HEIF photo (the iPhone's format); reading it needs pillow-heif: "
                        f"python -m pip install pillow-heif, or convert it to JPEG") from None
    register_heif_opener()
    try:
        return Image.open(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({reason(e)})") from None


def open_big_jpeg(path: str, refused: Image.DecompressionBombError) -> Image.Image:
    """A JPEG that Image.open refused for its size, opened by the JPEG reader itself (which has
    no size check) so that ``reduce_big_jpeg`` can scale it; any other kind, the one error."""
    if folders.describe_contents(path) == "a JPEG image":
        try:
            return JpegImagePlugin.JpegImageFile(path)
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"{path}: not a readable image ({reason(e)})") from None
    found = re.search(r"\((\d+) pixels\)", str(refused))
    raise too_big(path, int(found.group(1)) if found else 0) from None


def to_8bit(img: Image.Image) -> Image.Image:
    """Greyscale samples wider than 8 bits scaled to 0..255, where Pillow's convert() would
    clip them (a 16-bit photo turns white) or truncate them (a float image in 0..1 turns
    black): integers as 16-bit (the high byte, as Pillow reads 48-bit RGB), floats as
    0..1 when none is above 1, else as 0..255."""
    if img.mode in ("F", "I") or img.mode.startswith("I;16"):
        values = np.asarray(img)
        if img.mode == "F":
            values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
            values = values * 255 if values.size and values.max() <= 1.0 else values
        else:
            values = values.astype(np.int64) >> 8
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    return img


def upright_rgb(img: Image.Image, name: str) -> Image.Image:
    """Any image Pillow reads (CMYK, 16-bit, 48-bit, float, 1-bit, palette, RGBA,
    greyscale), turned upright as its EXIF orientation says, as 8-bit RGB."""
    check_pixel_count(img, name)
    try:
        img = to_8bit(ImageOps.exif_transpose(img))
        return img.convert("RGB")
    except Image.DecompressionBombError:
        raise too_big(name, img.width * img.height) from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{name}: not a readable image ({reason(e)})") from None


def open_rgb(path: str) -> Image.Image:
    with open_image(path) as img:
        return upright_rgb(img, path)


# ---------------------------------------------------------------- the evaluation geometry
def eval_resize(size: int) -> int:
    """The short side to resize to before a centre crop of ``size``: 256 for 224, as
    torchvision's classification presets do."""
    return round(size * 256 / 224)


def resized_sides(h: int, w: int, short: int) -> tuple[int, int, int, int]:
    """(height, width) to keep from the centre of an h x w image and the (height, width)
    to resize that to, so the short side becomes ``short`` and the long side is at most
    MAX_ASPECT times it."""
    keep_h, keep_w = min(h, math.floor(w * MAX_ASPECT)), min(w, math.floor(h * MAX_ASPECT))
    if keep_h <= keep_w:  # the long side as torchvision computes it: int(short * long / short_side)
        return keep_h, keep_w, short, int(short * keep_w / keep_h)
    return keep_h, keep_w, int(short * keep_h / keep_w), short


def center_offsets(h: int, w: int, crop_h: int, crop_w: int) -> tuple[int, int]:
    """(top, left) of a centre crop, placed as ``transforms.v2.CenterCrop`` places it."""
    return int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))


def five_crop_boxes(h: int, w: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of the four corners and the centre: ``transforms.v2.FiveCrop``'s order."""
    return [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), center_offsets(h, w, size, size)]


@dataclass(frozen=True)
class EvalViews:
    """transforms.EvalTransform on a Pillow RGB image: uint8 array [views, 3, size, size]."""
    size: int = 224
    resize: int = 256
    tta: bool = False

    def __call__(self, img: Image.Image) -> np.ndarray:
        if not self.resize:
            side = eval_resize(self.size) if self.tta else self.size
            img = img.resize((side, side), Image.BILINEAR)
        else:
            keep_h, keep_w, new_h, new_w = resized_sides(img.height, img.width, max(self.resize, self.size))
            top, left = center_offsets(img.height, img.width, keep_h, keep_w)
            if (keep_h, keep_w) != (img.height, img.width):
                img = img.crop((left, top, left + keep_w, top + keep_h))
            if (new_h, new_w) != (img.height, img.width):
                img = img.resize((new_w, new_h), Image.BILINEAR)
        pixels = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
        h, w = pixels.shape[1:]
        if not self.tta:
            if (h, w) == (self.size, self.size):
                return pixels[None]
            top, left = center_offsets(h, w, self.size, self.size)
            return pixels[None, :, top:top + self.size, left:left + self.size]
        views = [pixels[:, t:t + self.size, x:x + self.size] for t, x in five_crop_boxes(h, w, self.size)]
        mirrored = pixels[:, :, ::-1]
        views += [mirrored[:, t:t + self.size, x:x + self.size] for t, x in five_crop_boxes(h, w, self.size)]
        return np.stack(views)


def normalize(views: np.ndarray, mean, std) -> np.ndarray:
    """uint8 N x 3 x H x W -> float32, (x / 255 - mean) / std, as transforms.normalize."""
    x = views.astype(np.float32) / 255
    return (x - np.asarray(mean, np.float32).reshape(1, 3, 1, 1)) / np.asarray(std, np.float32).reshape(1, 3, 1, 1)

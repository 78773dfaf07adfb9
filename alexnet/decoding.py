"""Decoding an image file into upright 8-bit RGB pixels, uint8 [3, H, W]: TorchCodec for
8-bit JPEG and PNG (faster, bit-identical), Pillow for everything else and wherever TorchCodec
is missing. Every decoder applies the EXIF orientation (phone photos store their rotation
there), so training, validation and prediction all see the same upright pixels.

Imports only torch and Pillow: predict.py uses it and should not pay the second it takes to
import torchvision."""
import torch
from PIL import Image

from alexnet import images


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB Pillow image as uint8 CHW."""
    pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return pixels.view(img.height, img.width, 3).permute(2, 0, 1).contiguous()


def rgb_from_pil(img: Image.Image, name: str) -> torch.Tensor:
    """Any image Pillow reads, upright (EXIF), as uint8 RGB CHW (images.upright_rgb)."""
    return pil_to_tensor(images.upright_rgb(img, name))


def decode_pillow(path: str) -> torch.Tensor:
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
        return decode_pillow(path)
    try:
        with open(path, "rb") as f:
            decoded = decoder(f.read(), mode="RGB", output_dtype="auto")
    except (OSError, RuntimeError, ValueError):
        return decode_pillow(path)  # raises a DataError naming the file if Pillow cannot read it either
    # a 48-bit PNG decodes to uint16 here ("auto"); Pillow's scaling to 8 bits is the one every path uses
    return decoded if decoded.dtype == torch.uint8 else decode_pillow(path)


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

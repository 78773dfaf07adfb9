"""Shared fixtures: tiny generated image folders and a trained checkpoint, all on CPU."""
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))  # bench.py and the other tools
sys.path.insert(0, str(ROOT / "data_set"))  # check.py, label_issues.py, split_data.py
os.environ.setdefault("MPLBACKEND", "Agg")

import train  # noqa: E402

COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}


def make_colour_folder(root: Path, n_train: int = 10, n_val: int = 4, size: int = 72, seed: int = 0) -> Path:
    """An easy 3-class task: noisy photos dominated by one colour each."""
    gen = torch.Generator().manual_seed(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for name, rgb in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1)
                img = (base + torch.randn(3, size, size + 8 * i % 24, generator=gen) * 40).clamp(0, 255)
                arr = img.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
                Image.fromarray(arr).save(folder / f"{name}_{i}.jpg", quality=90)
    return root


def write_png48(path: Path, rgb16) -> None:
    """A 48-bit RGB PNG from an H x W x 3 uint16 array (Pillow cannot write one): 16 bits per
    sample, big-endian, as a scanner or a raw converter writes it."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\0" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    """Small, quick settings for the real train.py."""
    return ["--data", str(data), "--output-dir", str(out), "--img-size", "64", "--epochs", "3",
            "--batch-size", "8", "--lr", "1e-3", "--quiet", "--workers", "0", "--precision", "fp32", *extra]


def one_error_line(err: str) -> str:
    """The tools' answer to bad input: one line, 'error: ...', no traceback."""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def run_train(argv: list[str]) -> dict:
    return train.main(train.get_args_parser().parse_args(argv))


def run_script(script: str, *args: str, cwd: Path | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    env.pop("DISPLAY", None)
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def colour_data(tmp_path_factory) -> Path:
    return make_colour_folder(tmp_path_factory.mktemp("colours"))


@pytest.fixture(scope="session")
def trained(colour_data, tmp_path_factory) -> tuple[Path, dict]:
    """One real training run, shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("run")
    summary = run_train(train_args(colour_data, out, "--epochs", "4"))
    return out, summary

"""Shared fixtures: tiny generated image folders and a trained checkpoint, all on CPU."""
import hashlib
import os
import struct
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
from alexnet import checkpoint  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # pytest-xdist (pytest.ini): the cores shared out among the workers, and the processes a test
    # starts given the same share; two tiny trainings on a core each beat two on both cores
    threads = max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
                  // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)

COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}


SCRATCH_IN_MEMORY = Path("/dev/shm")
SCRATCH_ROOM = 8 * 2**30  # free bytes the tmpfs needs: a test's folders are removed when it passes


def pytest_configure(config) -> None:
    """Scratch folders (tmp_path) in memory where the machine has a tmpfs with room: every
    training run writes checkpoints of ~175 MB, and on a disk their writes, fsyncs, renames and
    deletions took a third of the suite's time. The same calls, the same checks, in RAM. Only the
    root moves (pytest's own numbered, locked folders beneath it, so two suites at once keep apart);
    a --basetemp given wins, and elsewhere the system's temporary folder is used."""
    if config.option.basetemp or os.environ.get("PYTEST_DEBUG_TEMPROOT"):
        return
    if not SCRATCH_IN_MEMORY.is_dir() or not os.access(SCRATCH_IN_MEMORY, os.W_OK):
        return
    room = os.statvfs(SCRATCH_IN_MEMORY)
    if room.f_bavail * room.f_frsize >= SCRATCH_ROOM:
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(SCRATCH_IN_MEMORY)  # read by pytest's tmp_path_factory


LONGEST_FIRST = "test_distributed.py"  # torchrun with two processes: a minute each, and it keeps both cores busy


def pytest_collection_modifyitems(config, items) -> None:
    """The longest tests first, then the other slow ones, the quick ones last to fill the gaps
    at the end: no worker then waits alone on one long test while the others are done."""
    items.sort(key=lambda item: (item.path.name != LONGEST_FIRST, item.get_closest_marker("slow") is None))


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory):
    """torch's hub cache holding torchvision's ImageNet AlexNet file, as a download leaves it:
    its state_dict keys and shapes, all views of one zero storage (144 MiB, not 233)."""
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    shapes = {k: v.shape for k, v in torchvision.models.alexnet().state_dict().items()}
    storage = torch.zeros(max(s.numel() for s in shapes.values()))
    dest = home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    dest.parent.mkdir(parents=True)
    torch.save({k: storage[:s.numel()].view(s) for k, s in shapes.items()}, dest)
    return home


def use_hub_cache(home: Path, monkeypatch) -> None:
    """TORCH_HOME at ``hub_cache``, whose stand-in file passes the hash check (the name carries the
    real file's SHA-256 prefix; the check is tested against it in test_diagnosis.py)."""
    monkeypatch.setenv("TORCH_HOME", str(home))
    file = home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    real_prefix = hashlib.sha256(file.read_bytes()).hexdigest()[:8]
    monkeypatch.setattr(checkpoint, "hub_hash_prefix", lambda name: real_prefix)


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


@pytest.fixture(scope="session")
def colour_data(tmp_path_factory) -> Path:
    return make_colour_folder(tmp_path_factory.mktemp("colours"))


@pytest.fixture(scope="session")
def trained(colour_data, tmp_path_factory) -> tuple[Path, dict]:
    """One real training run, shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("run")
    summary = run_train(train_args(colour_data, out, "--epochs", "4"))
    return out, summary

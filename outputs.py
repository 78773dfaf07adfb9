"""Writing files so that a crash, a kill or a full disk never leaves half of one.

Every file the scripts write (checkpoints, metrics.csv, JSON, figures, ONNX models, the
decoded-image cache) goes through ``write_atomic``: the bytes go to ``NAME.tmp-PID`` in
the same folder, are flushed to the disk, and the file is renamed over ``NAME`` in one
step. A reader, or the next run after a power cut, sees the old file or the new one,
never a mixture. Leftover ``*.tmp-*`` files are removed by ``remove_stale``.
"""
import os
import shutil
from pathlib import Path
from typing import IO, Callable

from errors import OutputError

TMP_MARK = ".tmp-"


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); Windows cannot open a folder, and needs not."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def link_atomic(existing: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give ``existing`` a second name, replacing ``path`` atomically: a hard link where the
    file system has them (no second write of the bytes), a copy where it has not."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    try:
        try:
            os.link(existing, tmp)
        except OSError:
            with open(existing, "rb") as source:
                write_atomic(tmp, lambda f: shutil.copyfileobj(source, f))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def save_torch(obj: object, path: str | os.PathLike) -> None:
    import torch

    write_atomic(path, lambda f: torch.save(obj, f))


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> None:
    """A matplotlib figure, in the format its file name says (.png, .pdf, .svg, ...)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    write_atomic(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))


def remove_stale(folder: Path) -> None:
    """Temporary files left by a process killed mid-write; the real files beside them are intact."""
    for stale in folder.glob(f"*{TMP_MARK}*"):
        stale.unlink(missing_ok=True)


def check_writable_file(path: str | os.PathLike, option: str) -> None:
    """Fail before any work if ``path`` cannot be written: a missing parent, a folder in the
    way, a read-only place. Writes nothing that stays."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: {option} names a folder; give a file name")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: {option}: folder {path.parent} does not exist")
    probe = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    try:
        probe.write_bytes(b"")
    except OSError as e:
        raise OutputError(f"{path}: {option}: cannot write there ({e.strerror or e})") from None
    probe.unlink(missing_ok=True)


def check_writable_folder(folder: str | os.PathLike, option: str) -> None:
    """Fail before any work if ``folder`` cannot be created or written; a folder this call
    had to create is removed again, so a run that stops here leaves nothing behind."""
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: {option}: a file is in the way (need a folder)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        check_writable_file(folder / "probe", option)
    except OSError as e:
        raise OutputError(f"{folder}: {option}: cannot create or write this folder ({e.strerror or e})") from None
    finally:
        for p in missing:  # innermost first
            try:
                p.rmdir()
            except OSError:
                pass

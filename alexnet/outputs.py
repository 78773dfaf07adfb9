"""Writing files so that a crash, a kill or a full disk never leaves half of one.

Every file the scripts write (checkpoints, metrics.csv, JSON, figures, ONNX models, the
decoded-image cache) goes through ``write_atomic``: the bytes go to ``NAME.tmp-PID`` in
the same folder, are flushed to the disk, and the file is renamed over ``NAME`` in one
step. A reader, or the next run after a power cut, sees the old file or the new one,
never a mixture. Leftover ``*.tmp-*`` files are removed by ``remove_stale``.
"""
import csv
import hashlib
import io
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable

from alexnet import folders
from alexnet.errors import OutputError

TMP_MARK = ".tmp-"
LOCK_NAME = ".lock"  # train.py's lock in its --output-dir
NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems
# Excel opens a UTF-8 CSV as UTF-8 only when it starts with a byte-order mark (else Chinese names are garbled);
# pandas and Python's "utf-8-sig" read it as usual
CSV_ENCODING = "utf-8-sig"
# OWASP's CSV injection rule: a cell starting so is a formula to a spreadsheet
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# what train.py writes into its --output-dir, and what evaluate.py and export.py write beside
# a checkpoint by default: --overwrite removes them all, so no file of an older run survives
# looking like the new run's
RUN_FILES = ("best.pth", "last.pth", "metrics.csv", "curves.png", "class_indices.json", "diagnosis.json",
             "lr_find.png", "best.onnx", "last.onnx")
EVAL_FOLDER = "eval"
EVAL_FILES = ("summary.json", "per_class.csv", "predictions.csv", "confusion_matrix.png", "reliability.png", "ood.png",
              "mistakes.png", "conv1_filters.png", "neighbours.png")


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it into
    place. A failure (a full disk, a folder that vanished) leaves the old file as it was and
    is an OutputError naming ``path`` and the cause."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e}{free_space(path.parent)}); "
                          f"the previous file, if any, is unchanged") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def temp_path(path: Path) -> Path:
    """``NAME.tmp-PID`` beside ``path``; a name too long for that keeps its first part and a hash
    of the whole (a legal 252-byte name must not fail for its temporary file's sake)."""
    mark = f"{TMP_MARK}{os.getpid()}"
    name = path.name.encode("utf-8", "surrogateescape")
    if len(name) + len(mark) > NAME_MAX:
        digest = hashlib.sha1(name).hexdigest()[:10]
        name = name[:NAME_MAX - len(mark) - len(digest) - 1].decode("utf-8", "ignore").encode() + b"~" + digest.encode()
    return path.with_name(name.decode("utf-8", "surrogateescape") + mark)


def free_space(folder: Path) -> str:
    """', 12 MiB free there', or '' where the disk cannot be asked."""
    try:
        return f", {shutil.disk_usage(folder).free / 2**20:,.0f} MiB free there"
    except OSError:
        return ""


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


def copy_atomic(existing: str | os.PathLike, path: str | os.PathLike) -> None:
    """A copy of ``existing`` at ``path``, written atomically: two files, never two names of
    one (a hard link would make a later change to either change both)."""
    with open(existing, "rb") as source:
        write_atomic(path, lambda f: shutil.copyfileobj(source, f, 2**20))


def move_atomic(written: str | os.PathLike, path: str | os.PathLike) -> None:
    """A finished file renamed over ``path`` (same disk), durably."""
    os.replace(written, path)
    _fsync_folder(Path(path).parent)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def save_torch(obj: object, path: str | os.PathLike) -> None:
    import torch

    def write(f: IO[bytes]) -> None:
        recording = _WriteErrors(f)
        try:
            torch.save(obj, recording)
        except RuntimeError:  # torch's zip writer turns a failed write (a full disk) into its own error
            if recording.error is None:
                raise
            raise recording.error from None

    write_atomic(path, write)


class _WriteErrors:
    """A file whose first failed write is kept, so the OSError behind torch's RuntimeError
    (ENOSPC, EFBIG) reaches the user as its one-line cause."""

    def __init__(self, f: IO[bytes]):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str):
        return getattr(self.f, name)


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> None:
    """A matplotlib figure, in the format its file name says (.png, .pdf, .svg, ...)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    write_atomic(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))


def clear_run(folder: Path) -> list[str]:
    """Remove the files an earlier run left in ``folder`` (RUN_FILES, and evaluate.py's
    report in eval/); returns their names. Nothing else in the folder is touched."""
    removed = []
    for name in (*RUN_FILES, *(f"{EVAL_FOLDER}/{f}" for f in EVAL_FILES)):
        path = folder / name
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(name)
    try:
        (folder / EVAL_FOLDER).rmdir()  # only if that left it empty
    except OSError:
        pass
    return removed


def remove_stale(folder: Path) -> None:
    """Temporary files left by a process killed mid-write; the real files beside them are intact."""
    for stale in folder.glob(f"*{TMP_MARK}*"):
        stale.unlink(missing_ok=True)


def check_writable_file(path: str | os.PathLike, option: str) -> None:
    """Fail before any work if ``path`` cannot be written: a missing parent, a folder in the
    way, a read-only place. Writes nothing that stays."""
    path = Path(path)
    check_name(path, option)
    if path.is_dir():
        raise OutputError(f"{path}: {option} names a folder; give a file name")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: {option}: folder {path.parent} does not exist")
    probe = temp_path(path)
    try:
        probe.write_bytes(b"")
    except OSError as e:
        raise OutputError(f"{path}: {option}: cannot write there ({e.strerror or e})") from None
    probe.unlink(missing_ok=True)


def check_name(path: Path, option: str) -> None:
    """A name the file system can hold (asking it about a longer one is an OSError)."""
    size = len(path.name.encode("utf-8", "surrogateescape"))
    if size > NAME_MAX:
        raise OutputError(f"{option} {path}: the name is {size} bytes; a file name can have at most {NAME_MAX}")


def check_new_output(path: str | os.PathLike, option: str, kind: str, inputs: tuple = (),
                     replaceable=lambda held: False) -> None:
    """Fail before any work if writing ``path`` (a file of ``kind``) would replace one of this
    command's ``inputs``, or an existing file that ``replaceable(description)`` does not
    accept (an earlier output of the same kind): a checkpoint is never replaced by an ONNX
    file, nor a photo by a figure. Then as ``check_writable_file``."""
    path = Path(path)
    check_name(path, option)
    for given in inputs:
        if given and _same_file(path, Path(given)):
            raise OutputError(f"{path}: {option} names an input of this command ({given}); writing {kind} there "
                              f"would replace it: pick another file name")
    if path.exists() and not path.is_dir():
        try:
            held = folders.describe_contents(path)
        except OSError as e:
            raise OutputError(f"{path}: {option}: cannot read the file already there ({e.strerror or e})") from None
        if not replaceable(held):
            raise OutputError(f"{path}: {option}: already holds {held}, which {kind} would replace; pick another "
                              f"file name, or remove it yourself first")
    check_writable_file(path, option)


def written_by_matplotlib(path: str | os.PathLike) -> bool:
    """Whether a figure file came from matplotlib (PNG, PDF, SVG and EPS name it in their
    metadata): such a file may be replaced by a new figure, a photo may not."""
    with open(path, "rb") as f:
        return b"matplotlib" in f.read(4096).lower()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


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


@contextmanager
def not_training(path: str | os.PathLike):
    """Hold the folder's train.py lock (``output_lock``) while a file in it is rewritten: a
    running train.py would replace the file after us. Refused in one line while one runs."""
    from filelock import FileLock, Timeout

    lock_file = Path(path).parent / LOCK_NAME
    if not lock_file.is_file():
        yield
        return
    try:
        held = FileLock(lock_file).acquire(timeout=0)
    except Timeout:
        raise OutputError(f"{path}: a train.py run is writing to {Path(path).parent} (lock {lock_file}) and "
                          f"would replace this file; wait for it to finish") from None
    with held:
        yield


def csv_cell(value):
    """A cell as a spreadsheet reads it as text: one that starts like a formula (OWASP: = + - @
    tab CR) or with the quote this adds gets a leading ', which ``csv_value`` removes again."""
    if isinstance(value, str) and value.startswith((*FORMULA_START, "'")):
        return "'" + value
    return value


def csv_value(cell: str) -> str:
    return cell[1:] if cell.startswith("'") else cell


def csv_text(header: list[str], rows: list[list]) -> str:
    """A CSV report: text cells escaped (``csv_cell``); written with ``write_csv``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    return buf.getvalue()


def write_csv(path: str | os.PathLike, text: str) -> None:
    """A CSV report with the byte-order mark Excel needs to read it as UTF-8 (CSV_ENCODING)."""
    write_atomic(path, lambda f: f.write(text.encode(CSV_ENCODING)))


def write_metrics(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    # every column any row has: rows resumed from an older checkpoint may lack the newer ones
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in history for k in row)))
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buf.getvalue())


def class_indices_json(classes: list[str]) -> str:
    """The tutorial's {"0": "daisy", ...}; names readable as written (Chinese too), escaped
    only where a folder name holds bytes that are not UTF-8, so json.load gives them back."""
    mapping = {str(i): c for i, c in enumerate(classes)}
    text = json.dumps(mapping, indent=4, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(mapping, indent=4)
    return text


@contextmanager
def output_lock(out: Path, fresh: bool):
    """Refuse a second train.py in the same folder (the OS drops the lock if we die), and
    a fresh run over a folder that holds a trained model, unless --overwrite. A folder this
    run created is removed again if the run ends before writing a checkpoint (or --lr find's plot, or the
    diagnosis of a run that diverged at once)."""
    from filelock import FileLock, Timeout

    check_writable_folder(out, "--output-dir")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out / LOCK_NAME)  # flock on POSIX, msvcrt on Windows: the OS drops it if we die
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise OutputError(f"{out}: another train.py is writing to this folder (lock {out / LOCK_NAME}); "
                          f"wait for it or pass another --output-dir") from None
    try:
        if fresh and (out / "last.pth").exists():
            raise OutputError(f"{out}: already holds a trained model (best.pth/last.pth); continue it with "
                              f"--resume {out / 'last.pth'}, replace it with --overwrite, or pick another --output-dir")
        if fresh and (out / "best.pth").exists():  # last.pth is gone: that run cannot be continued
            raise OutputError(f"{out}: already holds a trained model (best.pth, without the last.pth a resume needs); "
                              f"start from its weights with --weights {out / 'best.pth'} --output-dir OTHER, replace "
                              f"it with --overwrite, or pick another --output-dir")
        remove_stale(out)
        yield
    finally:
        lock.release()
        if created and not any((out / name).exists() for name in ("last.pth", "lr_find.png", "diagnosis.json")):
            shutil.rmtree(out, ignore_errors=True)

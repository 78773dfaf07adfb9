"""predict.py's --output file: one row per image, written as the images are classified, so a
folder of any size runs in bounded memory and an interrupted run continues where it stopped.

    python predict.py photos/ --output preds.csv         # path, class_1, prob_1, ... class_k, prob_k, unknown, error
    python predict.py photos/ --output preds.json        # [{"path": ..., "top": [[class, prob], ...], ...}, ...]

Rows are appended and flushed after every batch. Run the same command again after an
interruption (Ctrl-C, a kill, a power cut): the rows already there are kept, a half-written
last row is dropped (the file is rewritten once, atomically, without it), and only the
images without a row (or whose row is an error: fixed files are tried again) are
classified. The file is locked while a run writes it: a second run on it is refused. A
.json file is a JSON array with one row per line;
it is closed (``]``) when the run ends, and reopened by the next run. A file that is not
such a predictions file, or has other columns (another --topk), is never touched.
"""
import codecs
import csv
import io
import json
import os
from pathlib import Path
from typing import IO

from alexnet import outputs
from alexnet.errors import ArgumentError, OutputError

FORMATS = (".csv", ".json")
UNKNOWN = "unknown"  # the answer below --min-confidence (predict.py, app.py)
DIGITS = 6  # probabilities in the file; the console prints 3
ENCODING_ERRORS = "surrogateescape"  # a file name that is not UTF-8 is written and read back byte for byte


def check_output(path: str) -> None:
    """The name and its folder, before any work."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ArgumentError(f"--output {path}: unknown extension {suffix or '(none)'!r}; use .csv or .json")
    if os.path.isdir(path):
        raise ArgumentError(f"--output {path}: is a folder; give a file name ending in .csv or .json")
    folder = Path(path).parent
    if not folder.is_dir():
        raise OutputError(f"--output {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"--output {path}: folder {folder} is not writable")


def row(path: str, top: list[tuple[str, float]], unknown: bool, error: str | None,
        min_confidence: float | None = None) -> dict:
    return {"path": path, "top": [[c, round(p, DIGITS)] for c, p in top], "unknown": unknown, "error": error,
            "min_confidence": min_confidence}


def unknown_column(min_confidence: float | None) -> str:
    """The CSV's 'unknown' column names the threshold its rows were answered with, exactly (repr:
    a stored threshold has many digits, and a resumed run must read back the same number)."""
    return "unknown" if min_confidence is None else f"unknown_below_{min_confidence!r}"


def csv_header(k: int, min_confidence: float | None = None) -> list[str]:
    return ["path"] + [f"{what}_{i}" for i in range(1, k + 1) for what in ("class", "prob")] + \
        [unknown_column(min_confidence), "error"]


def csv_line(r: dict, k: int) -> str:
    cells = [r["path"]]
    for i in range(k):
        cells += [r["top"][i][0], f"{r['top'][i][1]:.{DIGITS}f}"] if i < len(r["top"]) else ["", ""]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow([outputs.csv_cell(c) for c in cells]
                                                   + [int(r["unknown"]), outputs.csv_cell(r["error"] or "")])
    return text.getvalue()


def csv_row(cells: list[str], k: int, min_confidence: float | None) -> dict:
    cells = [outputs.csv_value(c) for c in cells]
    top = [[cells[1 + 2 * i], float(cells[2 + 2 * i])] for i in range(k) if cells[1 + 2 * i]]
    return {"path": cells[0], "top": top, "unknown": cells[-2] == "1", "error": cells[-1] or None,
            "min_confidence": min_confidence}


def threshold_of(header: str, k: int) -> float | None | str:
    """The --min-confidence a CSV header was written with (None: none), or "other" if it is no
    predictions header with k classes."""
    cells = header.split(",")
    if cells[:-2] != csv_header(k)[:-2] or cells[-1] != "error":
        return "other"
    if cells[-2] == "unknown":
        return None
    try:
        return float(cells[-2].removeprefix("unknown_below_"))
    except ValueError:
        return "other"


class PredictionsFile:
    """Appends rows to a .csv or .json file, which it holds locked; ``done`` holds the paths
    that already have a row. Rows of images that failed before are dropped and tried again."""

    def __init__(self, path: str, k: int, min_confidence: float | None = None):
        self.path, self.k, self.min_confidence = Path(path), k, min_confidence
        self.json = self.path.suffix.lower() == ".json"
        if os.path.lexists(self.path) and not self.path.is_file():
            raise OutputError(f"--output {self.path}: exists and is not a regular file; pick another name")
        self.file = self._claim()
        rows = self._read() if self.path.stat().st_size else None
        kept = [r for r in rows or [] if not r.get("error")]
        self.retried = len(rows or []) - len(kept)
        self.done = {r["path"] for r in kept}
        self.resumed = rows is not None
        self.count = len(kept)
        # one atomic rewrite: drops a half-written last row, the rows to retry and a JSON file's closing bracket
        outputs.write_atomic(self.path, lambda f: f.write(self._text(kept)))
        self.file.close()  # the lock on the file as it was; now the rewritten one's
        self.file = self._claim()

    def _claim(self):
        """The file opened for appending and locked, so that two runs never write it at once."""
        for _ in range(3):
            try:
                handle = open(self.path, "a+b")
            except OSError as e:
                raise OutputError(f"--output {self.path}: cannot write ({e.strerror or e})") from None
            if not lock(handle):
                handle.close()
                raise OutputError(f"--output {self.path}: another predict.py is writing this file; wait for it to "
                                  f"finish, or pick another name")
            try:
                if os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino:
                    return handle
            except OSError:
                pass
            handle.close()  # replaced while we waited for it: lock the file now under the name
        raise OutputError(f"--output {self.path}: another process keeps replacing this file; pick another name")

    def _text(self, rows: list[dict]) -> bytes:
        if self.json:
            return ("[" + "".join(("\n" if i == 0 else ",\n") + json.dumps(r, ensure_ascii=False)
                                  for i, r in enumerate(rows))).encode("utf-8", ENCODING_ERRORS)
        text = ",".join(csv_header(self.k, self.min_confidence)) + "\n" + "".join(csv_line(r, self.k) for r in rows)
        return text.encode(outputs.CSV_ENCODING, ENCODING_ERRORS)

    def _read(self) -> list[dict]:
        """The complete rows of an earlier run's file; OutputError if it is something else, or
        was written with another --min-confidence."""
        def refuse(why: str):
            return OutputError(f"--output {self.path}: {why}; predict.py appends only to its own predictions file "
                               f"with the same columns (--topk); pick another name")

        def mismatch(before: float | None):
            return OutputError(f"--output {self.path}: its rows were answered with --min-confidence "
                               f"{'(none)' if before is None else f'{before:g}'}, this run has "
                               f"{'none' if self.min_confidence is None else f'{self.min_confidence:g}'}: give the "
                               f"same, or pick another name")

        try:
            raw = self.path.read_bytes()
        except OSError as e:
            raise OutputError(f"--output {self.path}: cannot read ({e.strerror})") from None
        raw = raw.removeprefix(codecs.BOM_UTF8)
        if not raw.startswith(b"[" if self.json else b"path,class_1,"):
            raise refuse(f"exists and is not a {'JSON' if self.json else 'CSV'} predictions file")
        text = raw.decode("utf-8", ENCODING_ERRORS)
        lines = text.split("\n")
        rows = []
        if self.json:
            if lines[0] != "[":
                raise refuse("exists and is not a JSON predictions file")
            for i, line in enumerate(lines[1:], 1):
                text = line.rstrip(",")
                if text == "]":
                    break
                try:
                    r = json.loads(text)
                except json.JSONDecodeError:
                    if i == len(lines) - 1:  # the row being written when the run stopped
                        break
                    raise refuse(f"line {i + 1} is not a row") from None
                if not (isinstance(r, dict) and isinstance(r.get("path"), str) and isinstance(r.get("top"), list)
                        and (r.get("error") or len(r["top"]) == self.k)):
                    raise refuse(f"line {i + 1} is not a row with {self.k} classes")
                if not r.get("error") and r.get("min_confidence") != self.min_confidence:
                    raise mismatch(r.get("min_confidence"))
                rows.append(r)
            return rows
        before = threshold_of(lines[0], self.k)
        if before == "other":
            raise refuse("exists with other columns" if lines[0].startswith("path,class_1") else
                         "exists and is not a CSV predictions file")
        if before != self.min_confidence:
            raise mismatch(before)
        complete = text[len(lines[0]) + 1:text.rfind("\n") + 1]  # after the last newline: a half-written row
        for i, cells in enumerate(csv.reader(io.StringIO(complete, newline="")), 2):
            if len(cells) != len(csv_header(self.k)):
                raise refuse(f"line {i} is not a row")
            rows.append(csv_row(cells, self.k, before))
        return rows

    def write(self, rows: list[dict]) -> None:
        text = "".join((("\n" if self.count + i == 0 else ",\n") + json.dumps(r, ensure_ascii=False)) if self.json
                       else csv_line(r, self.k) for i, r in enumerate(rows))
        self.count += len(rows)
        self.file.write(text.encode("utf-8", ENCODING_ERRORS))
        self.file.flush()

    def close(self) -> None:
        """The run is complete: a JSON array gets its closing bracket."""
        if self.json:
            self.file.write(b"\n]\n")
        self.file.close()


def lock(handle: IO) -> bool:
    """An exclusive lock on the open predictions file itself, without waiting (the OS drops it
    when the process dies); False if another process holds it. Not filelock, which locks a
    separate file: the lock must go with the file, so that a rival sees the rewritten one (_claim)."""
    try:
        try:
            import fcntl
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            import msvcrt
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True

"""predict.py's --output file: one row per image, written as the images are classified, so a
folder of any size runs in bounded memory and an interrupted run continues where it stopped.

    python predict.py photos/ --output preds.csv         # path, class_1, prob_1, ... class_k, prob_k, unknown, error
    python predict.py photos/ --output preds.json        # [{"path": ..., "top": [[class, prob], ...], ...}, ...]

Rows are appended and flushed after every batch. Run the same command again after an
interruption (Ctrl-C, a kill, a power cut): the rows already there are kept, a half-written
last row is dropped (the file is rewritten once, atomically, without it), and only the
images without a row are classified. A .json file is a JSON array with one row per line;
it is closed (``]``) when the run ends, and reopened by the next run. A file that is not
such a predictions file, or has other columns (another --topk), is never touched.
"""
import csv
import io
import json
import os
from pathlib import Path

from alexnet import outputs
from alexnet.errors import ArgumentError, OutputError

FORMATS = (".csv", ".json")
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


def row(path: str, top: list[tuple[str, float]], unknown: bool, error: str | None) -> dict:
    return {"path": path, "top": [[c, round(p, DIGITS)] for c, p in top], "unknown": unknown, "error": error}


def csv_header(k: int) -> list[str]:
    return ["path"] + [f"{what}_{i}" for i in range(1, k + 1) for what in ("class", "prob")] + ["unknown", "error"]


def csv_line(r: dict, k: int) -> str:
    cells = [r["path"]]
    for i in range(k):
        cells += [r["top"][i][0], f"{r['top'][i][1]:.{DIGITS}f}"] if i < len(r["top"]) else ["", ""]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(cells + [int(r["unknown"]), r["error"] or ""])
    return text.getvalue()


def csv_row(cells: list[str], k: int) -> dict:
    top = [[cells[1 + 2 * i], float(cells[2 + 2 * i])] for i in range(k) if cells[1 + 2 * i]]
    return {"path": cells[0], "top": top, "unknown": cells[-2] == "1", "error": cells[-1] or None}


class PredictionsFile:
    """Appends rows to a .csv or .json file; ``done`` holds the paths that already have one."""

    def __init__(self, path: str, k: int):
        self.path, self.k = Path(path), k
        self.json = self.path.suffix.lower() == ".json"
        if os.path.lexists(self.path) and not self.path.is_file():
            raise OutputError(f"--output {self.path}: exists and is not a regular file; pick another name")
        rows = self._read() if self.path.exists() and self.path.stat().st_size else None
        self.done = {r["path"] for r in rows or []}
        self.resumed = rows is not None
        self.count = len(rows or [])
        # one atomic rewrite: drops a half-written last row and a JSON file's closing bracket
        outputs.write_atomic(self.path, lambda f: f.write(self._text(rows or []).encode("utf-8", ENCODING_ERRORS)))
        self.file = open(self.path, "a", encoding="utf-8", errors=ENCODING_ERRORS, newline="")

    def _text(self, rows: list[dict]) -> str:
        if self.json:
            return "[" + "".join(("\n" if i == 0 else ",\n") + json.dumps(r, ensure_ascii=False)
                                 for i, r in enumerate(rows))
        return ",".join(csv_header(self.k)) + "\n" + "".join(csv_line(r, self.k) for r in rows)

    def _read(self) -> list[dict]:
        """The complete rows of an earlier run's file; OutputError if it is something else."""
        def refuse(why: str):
            return OutputError(f"--output {self.path}: {why}; predict.py appends only to its own predictions file "
                               f"with the same columns (--topk); pick another name")

        try:
            with open(self.path, "rb") as f:
                head = f.read(len(",".join(csv_header(self.k))) + 1)
            if not head.startswith(b"[" if self.json else b"path,class_1,"):
                raise refuse(f"exists and is not a {'JSON' if self.json else 'CSV'} predictions file")
            text = self.path.read_text(encoding="utf-8", errors=ENCODING_ERRORS)
        except OSError as e:
            raise OutputError(f"--output {self.path}: cannot read ({e.strerror})") from None
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
                rows.append(r)
            return rows
        if lines[0] != ",".join(csv_header(self.k)):
            raise refuse("exists with other columns" if lines[0].startswith("path,class_1") else
                         "exists and is not a CSV predictions file")
        complete = text[len(lines[0]) + 1:text.rfind("\n") + 1]  # after the last newline: a half-written row
        for i, cells in enumerate(csv.reader(io.StringIO(complete, newline="")), 2):
            if len(cells) != len(csv_header(self.k)):
                raise refuse(f"line {i} is not a row")
            rows.append(csv_row(cells, self.k))
        return rows

    def write(self, rows: list[dict]) -> None:
        text = "".join((("\n" if self.count + i == 0 else ",\n") + json.dumps(r, ensure_ascii=False)) if self.json
                       else csv_line(r, self.k) for i, r in enumerate(rows))
        self.count += len(rows)
        self.file.write(text)
        self.file.flush()

    def close(self) -> None:
        """The run is complete: a JSON array gets its closing bracket."""
        if self.json:
            self.file.write("\n]\n")
        self.file.close()

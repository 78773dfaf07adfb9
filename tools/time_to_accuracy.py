"""Plot validation top-1 against wall-clock seconds for several runs, from their metrics.csv.

    python tools/time_to_accuracy.py "tutorial=runs/tutorial/metrics.csv" "budget 6m=runs/b6/metrics.csv" \\
        -o docs/time_to_accuracy.png --title "flower photos, 2-core CPU"

Each point is one epoch: its ``elapsed_s`` (seconds since the command started, set-up
included) and its ``val_top1``.
"""
import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project folder: its scripts and alexnet/
from alexnet import figures  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=METRICS.csv")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--title", default="validation top-1 against wall-clock time")
    args = p.parse_args(argv)
    fig = figures.new_figure(8, 5)
    ax = fig.add_subplot(1, 1, 1)
    for run in args.runs:
        label, path = run.split("=", 1)
        rows = list(csv.DictReader(open(path)))
        ax.plot([float(r["elapsed_s"]) for r in rows], [float(r["val_top1"]) for r in rows], "o-", ms=3, label=label)
    ax.set(xlabel="seconds since the command started", ylabel="validation top-1", title=args.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    figures.save_with_font_hint(fig, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

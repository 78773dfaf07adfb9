"""Measure a wrong-label finder on labels known to be wrong: plant flips, then score rankings.

    python tools/planted_flips.py plant /tmp/flowers3 /tmp/flipped --fraction 0.05
    python data_set/label_issues.py /tmp/flipped --output-dir runs/li --epochs 10
    python train.py --data /tmp/flipped --output-dir runs/full                 # the in-sample baseline's model
    python tools/planted_flips.py score /tmp/flipped --issues runs/li/label_issues.csv --weights runs/full/last.pth

``plant`` links DATA's images into OUT (train/ with a seeded FRACTION of each class filed
under another class at random; val/ and test/ as they are) and lists the flips in
OUT/flips.json. ``score`` compares the flagged set and the top-N of three rankings with the
flips: label_issues.csv's (the finder's score), its out-of-fold column alone (cleanlab's label
quality), and the training images ranked by their loss under a model trained on all of them
(in-sample, what fastai's top losses shows), each also summed up by its average precision and
the largest recall at precision 0.5 or more.
"""
import csv
import json
import math
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project folder: its scripts and alexnet/

from alexnet import folders, outputs  # noqa: E402
from alexnet.errors import DataError, OneLineParser, run_main  # noqa: E402


def plant(data: Path, out: Path, fraction: float, seed: int) -> None:
    rng = random.Random(seed)
    classes = folders.find_classes(str(data / "train"))
    samples, _ = folders.class_samples(str(data / "train"), classes)
    flips = set(rng.sample(range(len(samples)), k=round(len(samples) * fraction)))
    listed = []
    for i, (path, target) in enumerate(samples):
        label = rng.choice([t for t in range(len(classes)) if t != target]) if i in flips else target
        link = out / "train" / classes[label] / os.path.basename(path)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.abspath(path), link)
        if i in flips:
            listed.append(str(link))
    for part in ("val", "test"):
        if (data / part).is_dir():
            os.symlink(os.path.abspath(data / part), out / part)
    (out / "flips.json").write_text(json.dumps(listed, indent=1))
    print(f"{len(listed)} of {len(samples)} training labels flipped in {out}")


def in_sample_ranking(out: Path, weights: str) -> list[str]:
    """The training images, highest loss under ``weights`` first."""
    from alexnet.classifier import load_classifier, predict_files

    classifier = load_classifier(weights)
    samples, _ = folders.class_samples(str(out / "train"), classifier.names)
    losses = {path: -math.log(max(p[t], 1e-12)) for (path, t), (_, p, _) in
              zip(samples, predict_files(classifier, [s[0] for s in samples], 32))}
    return sorted(losses, key=losses.get, reverse=True)


def precision_recall(chosen: list[str], flips: set[str]) -> str:
    hits = sum(p in flips for p in chosen)
    return f"precision {hits / max(len(chosen), 1):.3f}, recall {hits / len(flips):.3f} ({hits} of {len(chosen)})"


def ranking_summary(ranked: list[str], flips: set[str], floor: float = 0.5) -> str:
    """The ranking's average precision, and the largest recall of a top N whose precision is at
    least ``floor`` (the goal of issue #24: recall 0.6 at precision 0.5), by scikit-learn."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    truth = [path in flips for path in ranked]
    place = list(range(len(ranked), 0, -1))  # the first place gets the highest score
    precision, recall, _ = precision_recall_curve(truth, place)
    best = max((r for p, r in zip(precision, recall) if p >= floor), default=0.0)
    hits, top = 0, 0
    while hits < round(best * len(flips)):
        hits, top = hits + truth[top], top + 1
    return (f"average precision {average_precision_score(truth, place):.3f}; largest recall at precision >= "
            f"{floor}: {best:.3f} (top {top})")


def score(out: Path, issues: str, weights: str) -> None:
    for path in (out / "flips.json", Path(issues)):
        if not path.is_file():
            raise DataError(f"{path}: not found; run the plant step (and label_issues.py) first")
    flips = set(json.loads((out / "flips.json").read_text()))
    with open(issues, newline="", encoding=outputs.CSV_ENCODING) as f:
        rows = [r | {"file": outputs.csv_value(r["file"])} for r in csv.DictReader(f)]
    flagged = [r["file"] for r in rows if r["flagged"] == "1"]
    rankings = {"finder (both)": [r["file"] for r in rows],
                "out-of-fold (cleanlab)": [r["file"] for r in sorted(rows, key=lambda r: float(r["out_of_fold"]))],
                "in-sample loss": in_sample_ranking(out, weights)}
    print(f"{len(flips)} planted flips among {len(rows)} training images")
    print(f"out-of-fold, cleanlab's flagged set: {precision_recall(flagged, flips)}")
    print(f"{'top N':>6}  " + "  ".join(f"{name:<44}" for name in rankings).rstrip())
    for n in sorted(({round(len(flips) * f) for f in (0.5, 0.8, 1, 1.2, 1.4, 1.6, 2, 4)} | {len(flagged)}) - {0}):
        print(f"{n:>6}  " + "  ".join(f"{precision_recall(r[:n], flips):<44}" for r in rankings.values()).rstrip())
    for name, ranking in rankings.items():
        print(f"{name}: {ranking_summary(ranking, flips)}")


def get_args_parser() -> OneLineParser:
    p = OneLineParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("plant")
    a.add_argument("data")
    a.add_argument("out")
    a.add_argument("--fraction", type=float, default=0.05)
    a.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("score")
    b.add_argument("out")
    b.add_argument("--issues", required=True)
    b.add_argument("--weights", required=True)
    return p


def main(args) -> int:
    if args.command == "plant":
        plant(Path(args.data), Path(args.out), args.fraction, args.seed)
    else:
        score(Path(args.out), args.issues, args.weights)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))

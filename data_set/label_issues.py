"""Rank the training images by how likely their label is wrong, from out-of-sample predictions.

    python data_set/label_issues.py data_set/flower_data                     # 5 folds, 10 minutes in all
    python data_set/label_issues.py my_data --folds 4 --budget 30m --output-dir runs/labels

The training split is cut into K folds (per class, seeded). For each fold a model is trained
on the other K - 1 (``python train.py --budget`` with a K-th of the time, on links to the
images), and predicts the fold it never saw: every training image gets probabilities from a
model that did not learn its label. cleanlab's ``find_label_issues`` (confident learning,
Northcutt et al. 2021) then flags the images whose given label disagrees with what the models
are confident of, and ``get_label_quality_scores`` scores each one by that out-of-fold
probability of its label. Each fold model also predicts the K - 1 folds it trained on: a label
the models could not even learn is suspect too. The ranking's score is the geometric mean of
the two probabilities of the given label (out-of-fold, and in-sample averaged over the K - 1
models in log space); on 5% planted flips it found more of them than either alone
(docs/results.md).

Writes into --output-dir: label_issues.csv (every training image, most suspect first: file,
given label, suggested label, score, out_of_fold, in_sample, flagged), suspects.png (the top
suspects with both labels) and the fold runs (folds/k/). Needs cleanlab: pip install cleanlab.
"""
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project folder: its scripts and alexnet/

from alexnet import folders  # noqa: E402
from alexnet import outputs  # noqa: E402
from alexnet import budget  # noqa: E402
from alexnet.errors import ArgumentError, DataError, OneLineParser, UserError, run_main  # noqa: E402


def get_args_parser() -> OneLineParser:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="a folder with train/ (and val/) class folders")
    p.add_argument("--folds", type=int, default=5, help="K: models trained, each on K - 1 folds (default 5)")
    p.add_argument("--budget", default="10m", help="wall-clock time for all K trainings together (default 10m)")
    p.add_argument("--epochs", type=int, help="train each fold for this many epochs instead of a share of --budget")
    p.add_argument("--output-dir", default="runs/label_issues", help="where the ranking, gallery and fold runs go")
    p.add_argument("--seed", type=int, default=0, help="the folds and the trainings (default 0)")
    p.add_argument("--shown", type=int, default=24, help="suspects drawn in suspects.png")
    p.add_argument("--train-args", default="", help="more train.py options for the fold runs, e.g. '--img-size 128'")
    return p


def stratified_folds(samples: list[tuple[str, int]], k: int, seed: int) -> list[int]:
    """The fold of each sample: each class's images shuffled and dealt out in turn."""
    rng = random.Random(seed)
    fold = [0] * len(samples)
    by_class: dict[int, list[int]] = {}
    for i, (_, target) in enumerate(samples):
        by_class.setdefault(target, []).append(i)
    for members in by_class.values():
        rng.shuffle(members)
        for n, i in enumerate(members):
            fold[i] = n % k
    return fold


def link_split(samples: list[tuple[str, int]], classes: list[str], root: Path) -> None:
    """root/<class>/ holding links to the samples' files (no copies: the images stay where they are)."""
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
    for n, (path, target) in enumerate(samples):
        os.symlink(os.path.abspath(path), root / classes[target] / f"{n:07d}_{os.path.basename(path)}")


def fold_predictions(samples: list[tuple[str, int]], classes: list[str], out: Path, folds: int, length: list[str],
                     seed: int, extra: list[str]) -> tuple[list[list[float]], list[float]]:
    """Each training image's probabilities from the model that did not train on it, and the
    probability of its label under the K - 1 models that did (their geometric mean);
    ``length`` is train.py's --budget or --epochs option."""
    from alexnet.classifier import load_classifier, predict_files

    fold = stratified_folds(samples, folds, seed)
    probs: list[list[float] | None] = [None] * len(samples)
    in_sample_log = [0.0] * len(samples)
    for k in range(folds):
        run = out / "folds" / str(k)
        held = [i for i in range(len(samples)) if fold[i] == k]
        if not (run / "last.pth").is_file():
            fold_data = run / "data"
            if fold_data.exists():
                shutil.rmtree(fold_data)  # links of an interrupted run: made again
            link_split([samples[i] for i in range(len(samples)) if fold[i] != k], classes, fold_data / "train")
            link_split([samples[i] for i in held], classes, fold_data / "val")
            print(f"fold {k + 1}/{folds}: training on {len(samples) - len(held)} images ({' '.join(length)})", flush=True)
            code = subprocess.call([sys.executable, str(ROOT / "train.py"), "--data", str(fold_data), "--output-dir",
                                    str(run / "model"), *length, "--seed", str(seed), "--quiet", "--overwrite", *extra],
                                   stdout=subprocess.DEVNULL)
            if code != 0:
                raise UserError(f"fold {k + 1}: train.py exited with {code}; run the same command again to go on")
            os.replace(run / "model" / "last.pth", run / "last.pth")
        classifier = load_classifier(str(run / "last.pth"))
        for i, (path, p, error) in enumerate(predict_files(classifier, [s[0] for s in samples], 32)):
            if error:
                raise DataError(error)
            if fold[i] == k:
                probs[i] = p
            else:
                in_sample_log[i] += math.log(max(p[samples[i][1]], 1e-12)) / (folds - 1)
    return probs, [math.exp(v) for v in in_sample_log]


def rank(samples: list[tuple[str, int]], probs: list[list[float]],
         in_sample: list[float]) -> tuple[list[int], list[float], list[float], set[int]]:
    """(indices most suspect first, each sample's score, its out-of-fold label quality, the
    flagged ones): cleanlab's flags and label quality from the out-of-fold probabilities; the
    score is the geometric mean of that quality and the in-sample probability of the label."""
    try:
        import numpy as np
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise UserError("cleanlab: not installed; the label-issue finder needs it: pip install cleanlab") from None
    labels, pred = np.array([t for _, t in samples]), np.array(probs)
    out_of_fold = get_label_quality_scores(labels, pred).tolist()
    scores = [math.sqrt(q * p) for q, p in zip(out_of_fold, in_sample)]
    # one process: cleanlab's worker pool would inherit the scripts' Ctrl-C handler and print tracebacks at exit
    flagged = set(find_label_issues(labels, pred, n_jobs=1).nonzero()[0].tolist())
    return sorted(range(len(samples)), key=lambda i: scores[i]), scores, out_of_fold, flagged


def write_csv(path: Path, order: list[int], samples, classes, probs, columns: dict[str, list[float]],
              flagged: set[int]) -> None:
    rows = []
    for i in order:
        suggested = max(range(len(classes)), key=probs[i].__getitem__)
        rows.append([folders.printable(samples[i][0]), folders.printable(classes[samples[i][1]]),
                     folders.printable(classes[suggested]), *(f"{v[i]:.6f}" for v in columns.values()),
                     int(i in flagged)])
    outputs.write_csv(path, outputs.csv_text(["file", "given", "suggested", *columns, "flagged"], rows))


def plot_suspects(order: list[int], samples, classes, probs, path: Path, shown: int) -> None:
    from alexnet import figures, images

    top = order[:shown]
    cols = min(6, len(top))
    fig = figures.new_figure(2.4 * cols, 2.7 * ((len(top) + cols - 1) // cols))
    for n, i in enumerate(top):
        ax = fig.add_subplot((len(top) + cols - 1) // cols, cols, n + 1)
        with images.open_image(samples[i][0]) as img:
            img.thumbnail((320, 320))
            ax.imshow(images.upright_rgb(img, samples[i][0]))
        suggested = max(range(len(classes)), key=probs[i].__getitem__)
        ax.set_title(f"given {folders.printable(classes[samples[i][1]])}\nsuggested "
                     f"{folders.printable(classes[suggested])} {probs[i][suggested]:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle("most likely wrong labels (suggested: the out-of-fold prediction)")
    fig.tight_layout()
    figures.save_with_font_hint(fig, path, dpi=80)


def main(args) -> int:
    data, out = Path(args.data), Path(args.output_dir)
    if not (data / "train").is_dir():
        raise DataError(f"{data}: no train/ folder; give the folder split_data.py wrote")
    classes = folders.find_classes(str(data / "train"))
    if len(classes) < 2:
        raise DataError(f"{data / 'train'}: only one class folder ({classes[0]}); a classifier needs at least two")
    samples, _ = folders.class_samples(str(data / "train"), classes)
    smallest = min((sum(1 for _, t in samples if t == c), classes[c]) for c in range(len(classes)))
    if not 2 <= args.folds <= smallest[0]:
        raise ArgumentError(f"--folds {args.folds}: must be in 2..{smallest[0]} (the smallest class, "
                            f"{smallest[1]}, has {smallest[0]} images; each fold needs one of each class)")
    length = ["--epochs", str(args.epochs)] if args.epochs else \
        ["--budget", f"{budget.parse_duration(args.budget) / args.folds:.1f}s"]
    outputs.check_writable_folder(out, "--output-dir")
    out.mkdir(parents=True, exist_ok=True)
    probs, in_sample = fold_predictions(samples, classes, out, args.folds, length, args.seed, args.train_args.split())
    order, scores, out_of_fold, flagged = rank(samples, probs, in_sample)
    write_csv(out / "label_issues.csv", order, samples, classes, probs,
              {"score": scores, "out_of_fold": out_of_fold, "in_sample": in_sample}, flagged)
    plot_suspects(order, samples, classes, probs, out / "suspects.png", args.shown)
    print(f"{len(flagged)} of {len(samples)} training images flagged as likely mislabelled; ranking in "
          f"{out / 'label_issues.csv'}, the top {min(args.shown, len(samples))} in {out / 'suspects.png'}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())

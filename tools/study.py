"""Test AlexNet's design claims one by one, the paper's (Krizhevsky, Sutskever and Hinton,
NeurIPS 2012) and the tutorial's: each claim is a pair of arms, the study's baseline net and
the same net with that one choice undone (or added), trained over the same seeds on the same
data for the same epochs, and scored on the same held-out test images.

    python tools/study.py --data /tmp/flowers3 --out runs/study                  # every claim, seeds 0 1 2
    python tools/study.py --data /tmp/flowers3 --out runs/study --claims relu-tanh lrn --seeds 0 1 2 3 4
    python tools/study.py --out runs/study --report                              # the table again, nothing trained
    python tools/study.py --data /data/imagenet --out runs/imagenet -- --img-size 224 --epochs 90 --batch-size 256

Every arm is a tools/seeds.py run (OUT/ARM/seed-S: train.py with STUDY_ARGS, the options
after --, then the arm's own; evaluate.py on the data's test/ split), so an interrupted
study goes on where it stopped when the same command runs again. Writes OUT/study.md and
OUT/study.json (stamped with commit, date, CPU and command) and OUT/figures/: per claim the
paper's or tutorial's words and number, the measured effect with its 95% interval over seeds
(Student's t), the top-1 difference on the test images with an exact McNemar test per seed,
a figure where the claim is about speed or overfitting, and a verdict in words.
"""
import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import seeds  # tools/seeds.py: one arm = one command over the seeds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project folder: its scripts and alexnet/

from alexnet import stats  # noqa: E402
from alexnet.errors import ArgumentError, OneLineParser, UserError, run_main  # noqa: E402

# The study's training run, the same for every arm (docs/claims.md says why each is what it is).
STUDY_ARGS = ["--img-size", "64", "--epochs", "10", "--batch-size", "128", "--init", "default"]
ARMS: dict[str, list[str]] = {  # trained in this order; the costliest last
    "baseline": [],  # the tutorial's half-width net: ReLU, 3x3 pooling, no LRN, one column, dropout, crops and flips
    "tanh": ["--variant", "tanh"],
    "sigmoid": ["--variant", "sigmoid"],
    "lrn": ["--variant", "lrn"],
    "pool2": ["--variant", "pool2"],
    "no-dropout": ["--dropout", "0"],
    "no-crop-flip": ["--aug", "off"],
    "lighting": ["--lighting", "0.1"],
    "no-weight-decay": ["--wd", "0"],
    "no-conv3": ["--variant", "no-conv3"],
    "two-column": ["--arch", "paper", "--variant", "no-lrn"],  # twice the kernels, split over two columns
}
SPEED, TOP1, OVERFIT, TRAIN_ERROR, CHROMA = "speed", "top1", "overfit", "train_error", "chroma"
UNITS = {SPEED: "x", TOP1: " points", OVERFIT: " nats", TRAIN_ERROR: " points", CHROMA: ""}
NULL = {SPEED: 1.0}  # the value of "no effect" (0 for every other measure)
PAPER_ERROR = 0.25  # figure 1: the training error whose epochs are counted


@dataclass(frozen=True)
class Claim:
    key: str
    source: str
    says: str
    favoured: str      # the arm the claim says is better (faster, overfits less, lower error, more specialised)
    other: str
    measure: str       # how "better" is measured: SPEED, TOP1, OVERFIT, TRAIN_ERROR or CHROMA
    expected: float | None = None  # the size the source states, in the measure's units


CLAIMS = (
    Claim("relu-tanh", "paper 3.1, figure 1", "a 4-layer CNN with ReLUs reaches 25% training error on CIFAR-10 six "
          "times faster than with tanh", "baseline", "tanh", SPEED, 6.0),
    Claim("relu-sigmoid", "tutorial 3.2, 4.2", "ReLU accelerates SGD's convergence compared with sigmoid or tanh",
          "baseline", "sigmoid", SPEED),
    Claim("lrn", "paper 3.3; tutorial 4.4", "response normalisation lowers top-1 error by 1.4% (tutorial: helps "
          "generalisation, though later work suggests it may not be needed)", "lrn", "baseline", TOP1, 1.4),
    Claim("overlapping-pool", "paper 3.4; tutorial 3.3", "overlapping pooling (3x3, stride 2) against 2x2 lowers "
          "top-1 error by 0.4%", "baseline", "pool2", TOP1, 0.4),
    Claim("overlap-overfit", "paper 3.4", "with overlapping pooling the net is slightly harder to overfit",
          "baseline", "pool2", OVERFIT),
    Claim("two-column", "paper 3.2; tutorial 4.3", "the two-GPU net lowers top-1 error by 1.7% against a net with "
          "half as many kernels on one GPU", "two-column", "baseline", TOP1, 1.7),
    Claim("dropout-overfit", "paper 4.2; tutorial 3.5, 4.5", "without dropout the network overfits substantially",
          "baseline", "no-dropout", OVERFIT),
    Claim("dropout-slower", "paper 4.2", "dropout roughly doubles the iterations needed to converge",
          "no-dropout", "baseline", SPEED, 2.0),
    Claim("crop-flip", "paper 4.1; tutorial 4.6", "without crops and flips the network overfits substantially",
          "baseline", "no-crop-flip", OVERFIT),
    Claim("lighting", "paper 4.1", "PCA lighting lowers top-1 error by over 1%", "lighting", "baseline", TOP1, 1.0),
    Claim("weight-decay", "paper 5", "a small weight decay lowers the training error itself, not only the test "
          "error", "baseline", "no-weight-decay", TRAIN_ERROR),
    Claim("middle-conv", "paper 7; tutorial 4.1, 4.7", "removing a middle convolution costs about 2% top-1", "baseline",
          "no-conv3", TOP1, 2.0),
    Claim("columns-specialise", "paper 6.1, figure 3", "the two columns' first-layer kernels specialise: one "
          "largely colour-agnostic, the other colour-specific", "two-column", "baseline", CHROMA),
)
CLAIM_KEYS = [c.key for c in CLAIMS]


def arms_of(claims: list[Claim]) -> list[str]:
    """The arms these claims compare, in ARMS's order (the order they train in)."""
    return [arm for arm in ARMS if any(arm in (c.favoured, c.other) for c in claims)]


def get_args_parser() -> OneLineParser:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="ImageFolder with train/, val/ and test/ (the test split scores every arm)")
    p.add_argument("--out", required=True, help="folder for the arms (OUT/ARM/seed-S), the table and the figures")
    p.add_argument("--claims", nargs="+", choices=CLAIM_KEYS, default=CLAIM_KEYS, metavar="CLAIM",
                   help=f"which claims (default: all): {', '.join(CLAIM_KEYS)}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the seeds of every arm (default 0 1 2)")
    p.add_argument("--report", action="store_true", help="train nothing: the table from the runs in --out")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train.py options for every arm")
    return p


# ---------------------------------------------------------------- what one run measured
@dataclass(frozen=True)
class Run:
    rows: list[dict]          # metrics.csv
    correct: dict[str, bool]  # test image -> right or not (evaluate.py's predictions.csv)
    top1: float
    kernels: object           # the first convolution's weights (C x 3 x k x k tensor), for CHROMA

    def train_error(self) -> list[float]:
        return [1 - float(r["train_acc"]) for r in self.rows]

    def overfit(self) -> float:
        """The gap between validation and training loss at the last epoch."""
        return float(self.rows[-1]["val_loss"]) - float(self.rows[-1]["train_loss"])


def read_run(folder: Path, seed: int) -> Run:
    import torch

    seeds.score(folder, seed)
    with open(folder / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(folder / "eval" / "predictions.csv", newline="", encoding="utf-8-sig") as f:
        correct = {r["path"]: r["true"] == r["predicted"] for r in csv.DictReader(f)}
    summary = json.loads((folder / "eval" / "summary.json").read_text())
    weights = torch.load(folder / "best.pth", map_location="cpu", weights_only=True, mmap=True)["model"]
    return Run(rows, correct, summary["top1"], weights["features.0.weight"].float())


def epochs_to_reach(errors: list[float], threshold: float) -> float | None:
    """The (interpolated) epoch at which the training error first falls to ``threshold``, None
    if it never does."""
    previous = 1.0
    for epoch, error in enumerate(errors, 1):
        if error <= threshold:
            return epoch - 1 + (previous - threshold) / (previous - error) if previous > error else float(epoch)
        previous = error
    return None


def specialisation(kernels) -> tuple[float, float, float]:
    """Mean chroma (alexnet.stats.chroma) of the first and second half of the first layer's
    kernels (the paper's two GPUs' groups; in a one-column net an arbitrary split), and their
    difference."""
    first, second = stats.column_chroma(kernels)
    return first, second, abs(first - second)


# ---------------------------------------------------------------- one claim's numbers
def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% interval over seeds (Student's t; a single seed has none)."""
    from scipy.stats import t

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def speed_threshold(baseline: list[Run]) -> float:
    """The training error the speed claims count epochs to: the paper's 25% when every
    baseline seed is below it by half its epochs, else the highest error a baseline seed has
    at half its epochs (so each of them reaches it, and a net twice as slow still can)."""
    half = [run.train_error()[max(0, math.ceil(len(run.rows) / 2) - 1)] for run in baseline]
    return max(PAPER_ERROR, max(half))


def measure(claim: Claim, favoured: Run, other: Run, threshold: float) -> tuple[float, bool]:
    """The claim's measure on one seed's pair, oriented so that a positive value (above 1 for
    SPEED) is what the claim says; and whether it is only a lower bound (the slower arm never
    reached the threshold: its epochs count as the run's length)."""
    if claim.measure == SPEED:
        fast = epochs_to_reach(favoured.train_error(), threshold)
        slow = epochs_to_reach(other.train_error(), threshold)
        if fast is None:  # the arm the claim favours never got there: its epochs are at least the run's
            return (slow or len(other.rows)) / len(favoured.rows), False
        return (slow or len(other.rows)) / fast, slow is None
    if claim.measure == TOP1:
        return (favoured.top1 - other.top1) * 100, False
    if claim.measure == OVERFIT:
        return other.overfit() - favoured.overfit(), False
    if claim.measure == TRAIN_ERROR:
        return (other.train_error()[-1] - favoured.train_error()[-1]) * 100, False
    return specialisation(favoured.kernels)[2] - specialisation(other.kernels)[2], False


def mcnemar_pair(favoured: Run, other: Run) -> tuple[int, int, float]:
    """Images only the favoured arm got right, only the other did, and the exact McNemar p."""
    common = favoured.correct.keys() & other.correct.keys()
    only_f = sum(favoured.correct[p] and not other.correct[p] for p in common)
    only_o = sum(other.correct[p] and not favoured.correct[p] for p in common)
    return only_f, only_o, stats.mcnemar(only_f, only_o)


def verdict(claim: Claim, low: float, high: float, lower_bounds: bool, seed_count: int) -> str:
    null = NULL.get(claim.measure, 0.0)
    unit = UNITS[claim.measure]
    if math.isnan(low):
        return "one seed: no interval, no verdict"
    if low > null and lower_bounds:
        return "holds, by at least this much: the slower arm never got there" + (
            "" if claim.expected is None or low > claim.expected else
            f" (whether by the stated {claim.expected:g}{unit}, runs this short cannot tell)")
    if low > null:
        said = "" if claim.expected is None else (
            f"; smaller than the stated {claim.expected:g}{unit}" if high < claim.expected else
            f"; larger than the stated {claim.expected:g}{unit}" if low > claim.expected else
            f"; the stated {claim.expected:g}{unit} is inside the interval")
        return "holds" + said
    if high < null and not lower_bounds:
        return "does not hold: the opposite is measured"
    return (f"not detectable at this scale: an effect within {(high - low) / 2:.2g}{unit} of "
            f"{'no difference' if not null else '1x'} cannot be told from none with {seed_count} seeds")


def claim_row(claim: Claim, arms: dict[str, dict[int, Run]], threshold: float) -> dict:
    pairs = [(arms[claim.favoured][s], arms[claim.other][s]) for s in sorted(arms[claim.favoured])
             if s in arms[claim.other]]
    values, bounds = zip(*(measure(claim, f, o, threshold) for f, o in pairs))
    mean, low, high = t_interval(list(values))
    top1 = t_interval([(f.top1 - o.top1) * 100 for f, o in pairs])
    tests = [mcnemar_pair(f, o) for f, o in pairs]
    row = {"claim": claim.key, "source": claim.source, "says": claim.says, "expected": claim.expected,
           "favoured": claim.favoured, "other": claim.other, "measure": claim.measure, "seeds": len(pairs),
           "values": list(values), "lower_bounds": list(bounds), "mean": mean, "ci": [low, high],
           "top1_difference": top1[0], "top1_ci": list(top1[1:]), "mcnemar": [list(t) for t in tests],
           "verdict": verdict(claim, low, high, any(bounds), len(pairs))}
    if claim.measure == SPEED:
        row["threshold"] = threshold
    if claim.measure == CHROMA:
        row["groups"] = {arm: [list(specialisation(arms[arm][s].kernels)[:2]) for s in sorted(arms[arm])]
                         for arm in (claim.favoured, claim.other)}
    return row


# ---------------------------------------------------------------- figures
def draw_figure(claim: Claim, arms: dict[str, dict[int, Run]], threshold: float, path: Path) -> bool:
    """Training error against epochs (speed claims, as the paper's figure 1), training and
    validation loss (overfitting claims), or the first layer's kernels by group (figure 3)."""
    if claim.measure not in (SPEED, OVERFIT, CHROMA):
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if claim.measure == CHROMA:
        return draw_kernels(claim, arms, path, plt)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for arm, colour in ((claim.favoured, "tab:blue"), (claim.other, "tab:red")):
        for i, run in enumerate(arms[arm][s] for s in sorted(arms[arm])):
            epochs = range(1, len(run.rows) + 1)
            if claim.measure == SPEED:
                ax.plot(epochs, [e * 100 for e in run.train_error()], color=colour, label=arm if i == 0 else None)
            else:
                ax.plot(epochs, [float(r["train_loss"]) for r in run.rows], color=colour, linestyle="--",
                        label=f"{arm}: training" if i == 0 else None)
                ax.plot(epochs, [float(r["val_loss"]) for r in run.rows], color=colour,
                        label=f"{arm}: validation" if i == 0 else None)
    if claim.measure == SPEED:
        ax.axhline(threshold * 100, color="grey", linestyle=":", label=f"{threshold:.0%} training error")
        ax.set_ylabel("training error (%)")
    else:
        ax.set_ylabel("loss (dashed: training)")
    ax.set_xlabel("epoch")
    ax.set_title(f"{claim.key}: one line per seed", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def draw_kernels(claim: Claim, arms: dict[str, dict[int, Run]], path: Path, plt) -> bool:
    """The first seed's first-layer kernels of both arms side by side, each net's two halves in
    rows of their own (evaluate.py's filter grid), titled with each half's mean chroma."""
    from alexnet.figures import filter_grid

    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4), dpi=100)
    for ax, arm in zip(axes, (claim.favoured, claim.other)):
        kernels = arms[arm][min(arms[arm])].kernels
        first, second, _ = specialisation(kernels)
        ax.imshow(filter_grid(kernels, columns=2).permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"{arm}, seed {min(arms[arm])}: {len(kernels)} kernels\nmean chroma: upper half {first:.3f}, "
                     f"lower half {second:.3f}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# ---------------------------------------------------------------- the table
def number(value: float, lower_bound: bool = False) -> str:
    return (">" if lower_bound else "") + f"{value:.3g}"


def table(rows: list[dict], header: dict, setup: str) -> str:
    lines = [f"Reported at commit {header['commit']}, {header['date']}, {header['cpu']}; `{header['command']}`", "",
             setup, "",
             "| claim | source says | pair (favoured vs other) | measured: mean (95% CI), per seed | test top-1 "
             "difference, points (95% CI); McNemar p per seed | figure | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        unit = UNITS[r["measure"]]
        low, high = r["ci"]
        what = {SPEED: f"epochs to {r.get('threshold', 0):.1%} training error, {r['other']} / {r['favoured']}",
                TOP1: "test top-1, favoured - other", OVERFIT: "(validation - training loss) at the end, other - "
                "favoured", TRAIN_ERROR: "final training error, other - favoured",
                CHROMA: "gap between the mean chroma of the first-layer kernels' two halves, favoured - other"}[
                    r["measure"]]
        seeds_text = ", ".join(number(v, b) for v, b in zip(r["values"], r["lower_bounds"]))
        interval = "no interval" if math.isnan(low) else f"{low:.3g} to {high:.3g}"
        mcnemar = ", ".join(f"{p:.2g} ({a}:{b})" for a, b, p in r["mcnemar"])
        t_low, t_high = r["top1_ci"]
        top1 = f"{r['top1_difference']:+.1f} ({'-' if math.isnan(t_low) else f'{t_low:+.1f} to {t_high:+.1f}'})"
        figure = f"[{r['claim']}](figures/{r['claim']}.png)" if r.get("figure") else "none: a claim about the score"
        stated = "" if r["expected"] is None else f" [stated: {r['expected']:g}{unit}]"
        lines.append(f"| {r['claim']} | {r['source']}: {r['says']}{stated} | {r['favoured']} vs {r['other']} | "
                     f"{what}: **{r['mean']:.3g}{unit}** ({interval}); {seeds_text} | {top1}; {mcnemar} | "
                     f"{figure} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def report(out: Path, claims: list[Claim], seed_list: list[int], argv: list[str]) -> str:
    arms: dict[str, dict[int, Run]] = {}
    for arm in arms_of(claims):
        runs = {s: out / arm / f"seed-{s}" for s in seed_list}
        arms[arm] = {s: read_run(folder, s) for s, folder in runs.items() if (folder / "best.pth").is_file()}
        if not arms[arm]:
            raise UserError(f"{out / arm}: no finished run of arm {arm!r}; run the study without --report")
    threshold = speed_threshold(list(arms["baseline"].values())) if "baseline" in arms else PAPER_ERROR
    (out / "figures").mkdir(exist_ok=True)
    rows = []
    for claim in claims:
        row = claim_row(claim, arms, threshold)
        row["figure"] = draw_figure(claim, arms, threshold, out / "figures" / f"{claim.key}.png")
        rows.append(row)
    trained = json.loads((out / "study_args.json").read_text()) if (out / "study_args.json").is_file() else {}
    commits = sorted({json.loads(p.read_text()).get("commit") for p in out.glob("*/seed-*/trained_at.json")} - {None})
    images = len(next(iter(next(iter(arms.values())).values())).correct)  # every run scores the same test images
    setup = (f"Trained at commit {', '.join(commits) or 'unknown'}. "
             f"Every arm: `python train.py {' '.join(trained.get('train_args', []))} ARM`, seeds "
             f"{' '.join(map(str, seed_list))}; scored by evaluate.py on the {images} test images. Arms: "
             + "; ".join(f"{arm} `{' '.join(ARMS[arm]) or '(nothing)'}`" for arm in arms))
    header = seeds.stamp(["python", "tools/study.py", *argv])
    text = table(rows, header, setup)
    (out / "study.md").write_text(text)
    (out / "study.json").write_text(json.dumps({**header, "setup": setup, "claims": rows}, indent=2) + "\n")
    return text


def main(args: argparse.Namespace) -> int:
    claims = [c for c in CLAIMS if c.key in args.claims]
    out = Path(args.out)
    user_args = [a for a in args.train_args if a != "--"]
    if any(a in ("--seed", "--output-dir", "--data") or a.startswith(("--seed=", "--output-dir=", "--data="))
           for a in user_args):
        raise ArgumentError("--data, --seed and --output-dir are the study's own; give --data before --")
    if not args.report:
        if not args.data:
            raise ArgumentError("--data is needed to train (or --report to tabulate what is in --out)")
        if not (Path(args.data) / "test").is_dir():
            raise ArgumentError(f"--data {args.data}: no test/ split; the study scores every arm on held-out images "
                                f"(python data_set/split_data.py SOURCE --test 0.1)")
        train_args = ["--data", args.data, *STUDY_ARGS, *user_args, "--cache-dir", str(out / ".cache")]
        out.mkdir(parents=True, exist_ok=True)
        (out / "study_args.json").write_text(json.dumps({"train_args": [*STUDY_ARGS, *user_args]}) + "\n")
        for arm in arms_of(claims):
            for seed in args.seeds:
                print(f"arm {arm}, ", end="")
                seeds.train(out / arm / f"seed-{seed}", seed, [*train_args, *ARMS[arm]])
    print(report(out, claims, args.seeds, args.argv))
    return 0


def cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = get_args_parser().parse_args(argv)
    args.argv = argv
    return run_main(main, args)


if __name__ == "__main__":
    sys.exit(cli())

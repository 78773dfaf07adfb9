"""The highest training-step loss of healthy runs, as a multiple of ln(classes) (a blind
guess's loss): the evidence for train.py's EXPLODED, the multiple above which a run is
stopped as diverged. Each run is train.py itself; a wrapper around its loss check records
every step's loss.

    python tools/loss_peaks.py --data data_set/flower_data --epochs 2
    python tools/loss_peaks.py --data data_set/flower_data --runs "--lr 10" "--opt sgd --lr 10"   # diverging runs

It prints one Markdown row per run: the settings, the steps, the first and the highest step
loss, that peak over ln(classes), the best validation top-1, and how the run ended.
"""
import argparse
import math
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project folder: its scripts and alexnet/

import train  # noqa: E402
from alexnet.errors import UserError  # noqa: E402
from alexnet.preemption import TrainingStopped  # noqa: E402

HEALTHY = ["--recipe tutorial", "--recipe fast", "--recipe long", "--opt sgd", "--lr 0.01", "--batch-size 8"]


def peak(data: str, settings: str, epochs: int, out: Path) -> dict:
    losses, classes = [], []
    check = train.check_loss

    def recording(cfg, value, num_classes, where):
        losses.append(value)
        classes.append(num_classes)
        check(cfg, value, num_classes, where)

    train.check_loss = recording
    try:
        argv = ["--data", data, "--output-dir", str(out), "--epochs", str(epochs), "--quiet", *shlex.split(settings)]
        result = train.main(train.get_args_parser().parse_args(argv))
        ended, best = "done", result["best_acc"]
    except TrainingStopped as e:
        ended, best = f"stopped: {str(e).split(';')[0]}", float("nan")
    finally:
        train.check_loss = check
    blind = math.log(classes[0])
    finite = [v for v in losses if math.isfinite(v)]
    return {"settings": settings, "steps": len(losses), "first": losses[0], "peak": max(finite),
            "ratio": max(finite) / blind, "best": best, "ended": ended}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="an ImageFolder root with train/ and val/")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--runs", nargs="+", default=HEALTHY, help="train.py settings of each run, one string each")
    args = p.parse_args()
    print("| settings | steps | first loss | highest loss | highest / ln(classes) | best val top-1 | ended |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for settings in args.runs:
        with tempfile.TemporaryDirectory(prefix="loss-peaks-") as out:
            try:
                r = peak(args.data, settings, args.epochs, Path(out) / "run")
            except UserError as e:
                print(f"error: {settings}: {e}", file=sys.stderr)
                return 2
        print(f"| `{r['settings']}` | {r['steps']} | {r['first']:.3f} | {r['peak']:.4g} | {r['ratio']:.3g} | "
              f"{r['best']:.4f} | {r['ended']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

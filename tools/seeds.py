"""Run one training command over several seeds, score every model on the held-out split,
and report each seed and the mean ± standard deviation.

    python tools/seeds.py --out runs/seeds/tutorial -- --data /tmp/flowers3 --recipe tutorial
    python tools/seeds.py --out runs/seeds/budget --seeds 0 1 2 3 -- --data /tmp/flowers3 --budget 5m
    python tools/seeds.py --out runs/seeds/tutorial --report      # the table again, from what is there

Each seed trains in a process of its own, one after another, into OUT/seed-S
(``python train.py ARGS --seed S --output-dir OUT/seed-S``). Run the same command again after
an interruption: a finished seed is skipped, an unfinished one resumed from its last.pth.
Then ``evaluate.py`` scores each best.pth on the data's test/ split (its val/ when there is
none; the table says which). Writes OUT/seeds.json and OUT/seeds.md, stamped with the commit,
date, CPU model and command: per seed the best val top-1 and its epoch, the test top-1 with
its 95% interval, the wall time of the training command; then mean ± std over the seeds.
"""
import argparse
import csv
import datetime
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project folder: its scripts and alexnet/

from alexnet.errors import ArgumentError, OneLineParser, UserError, run_main  # noqa: E402


def get_args_parser() -> OneLineParser:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the runs (OUT/seed-S) and the report")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the seeds (default 0 1 2)")
    p.add_argument("--report", action="store_true", help="train nothing: report the runs already in --out")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train.py's options, without --seed")
    return p


def finished(run: Path) -> bool | None:
    """True when run/last.pth holds its last planned epoch, False when it holds an earlier
    one, None when there is none."""
    import torch

    last = run / "last.pth"
    if not last.is_file():
        return None
    ckpt = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    planned = ckpt["plan"].get("epochs") if ckpt["config"].get("budget") else ckpt["config"]["epochs"]
    return ckpt["epoch"] >= planned


def train(run: Path, seed: int, train_args: list[str]) -> None:
    state = finished(run)
    if state:
        print(f"seed {seed}: {run} is finished")
        return
    argv = ["--resume", str(run / "last.pth")] if state is False else [*train_args, "--seed", str(seed),
                                                                       "--output-dir", str(run)]
    print(f"seed {seed}: python train.py {' '.join(argv)}", flush=True)
    if state is None:
        run.mkdir(parents=True, exist_ok=True)
        (run / "trained_at.json").write_text(json.dumps(stamp(["python", "train.py", *argv])))
    code = subprocess.call([sys.executable, str(ROOT / "train.py"), *argv, "--quiet"])
    if code != 0:
        raise UserError(f"seed {seed}: train.py exited with {code}; run the same command again to go on")


def score(run: Path, seed: int) -> dict:
    """evaluate.py on best.pth (once); its summary."""
    summary = run / "eval" / "summary.json"
    if not summary.is_file():
        code = subprocess.call([sys.executable, str(ROOT / "evaluate.py"), "--weights", str(run / "best.pth"),
                                "--output-dir", str(run / "eval"), "--neighbours", "0", "--mistakes", "0", "--quiet"],
                               stdout=subprocess.DEVNULL)
        if code not in (0, 1):  # 1: some images could not be read, the others were scored
            raise UserError(f"seed {seed}: evaluate.py exited with {code} on {run / 'best.pth'}")
    return json.loads(summary.read_text())


def row_of(run: Path, seed: int) -> dict:
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    best = max(rows, key=lambda r: float(r["val_top1"]))
    ev = score(run, seed)
    trained_at = json.loads((run / "trained_at.json").read_text()) if (run / "trained_at.json").is_file() else {}
    return {"seed": seed, "trained_at": trained_at.get("commit"), "epochs": len(rows),
            "best_val_top1": float(best["val_top1"]), "best_epoch": int(best["epoch"]),
            "split": ev["split"], "test_top1": ev["top1"], "test_top1_ci": ev["ci"]["top1"], "images": ev["images"],
            "wall_s": float(rows[-1].get("elapsed_s") or 0.0)}


def mean_std(values: list[float], digits: int = 4) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def stamp(command: list[str]) -> dict:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return {"commit": git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if git("status", "--porcelain",
                                                                                                  "--untracked-files=no") else ""),
            "date": datetime.date.today().isoformat(), "cpu": cpu, "command": " ".join(command)}


def report(out: Path, rows: list[dict], header: dict) -> str:
    trained = sorted({r["trained_at"] for r in rows if r["trained_at"]})
    lines = [f"Reported at commit {header['commit']} (trained at {', '.join(trained) or 'unknown'}), {header['date']}, "
             f"{header['cpu']}; `{header['command']}`", "",
             "| seed | epochs | best val top-1 (epoch) | top-1 on " + rows[0]["split"] + " (95% CI) | wall time |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        low, high = r["test_top1_ci"]
        lines.append(f"| {r['seed']} | {r['epochs']} | {r['best_val_top1']:.4f} ({r['best_epoch']}) | "
                     f"{r['test_top1']:.4f} ({low:.4f}-{high:.4f}), {r['images']} images | {r['wall_s']:.0f} s |")
    lines.append(f"| mean ± std | | {mean_std([r['best_val_top1'] for r in rows])} | "
                 f"{mean_std([r['test_top1'] for r in rows])} | {mean_std([r['wall_s'] for r in rows], 0)} s |")
    text = "\n".join(lines) + "\n"
    (out / "seeds.md").write_text(text)
    (out / "seeds.json").write_text(json.dumps({**header, "runs": rows}, indent=2) + "\n")
    return text


def main(args: argparse.Namespace) -> int:
    train_args = [a for a in args.train_args if a != "--"]
    out = Path(args.out)
    if any(a == "--seed" or a.startswith("--seed=") or a == "--output-dir" for a in train_args):
        raise ArgumentError("--seed and --output-dir are set per run by tools/seeds.py; drop them")
    if not args.report:
        out.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            train(out / f"seed-{seed}", seed, train_args)
    rows = [row_of(out / f"seed-{seed}", seed) for seed in args.seeds if (out / f"seed-{seed}" / "best.pth").is_file()]
    if not rows:
        raise UserError(f"{out}: no finished run to report")
    print(report(out, rows, stamp(["python", "tools/seeds.py", *args.argv])))
    return 0


def cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = get_args_parser().parse_args(argv)
    args.argv = argv
    return run_main(main, args)


if __name__ == "__main__":
    sys.exit(cli())

"""Plant the failures people ask about on real photos and record what train.py's diagnosis
says about each (docs/diagnosis.md): shuffled labels, 5 photos per class, --lr 1e-6, a finite
explosion, a validation split copied from training, a long run on 20 photos per class, and
three healthy runs (the tutorial, default and budget recipes), and healthy runs of several sizes
(2-60 photos a class, 1-40 epochs, 64-224 px), on which no learning-rate finding is true.

    python data_set/split_data.py ../shared/data/flower_photos_224 --dest /tmp/flowers3 --test 0.1 --link
    python tools/plant_failures.py --data /tmp/flowers3 --out runs/planted          # about 25 minutes on 2 cores
    python tools/plant_failures.py --data /tmp/flowers3 --out runs/planted --only lr_1e-6

Every case trains at --img-size 112 in a process of its own (``python train.py ...``) into
OUT/<case>; the planted data sets are built from DATA's photos under OUT/data. Writes
OUT/planted.md: the case, its command, the exit code, the best validation top-1, the causes
named and the first finding's words, stamped with the commit, date, CPU and command.
"""
import argparse
import csv
import json
import random
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from seeds import stamp  # noqa: E402

SIZE = ["--img-size", "112"]
# healthy runs of several sizes (photos a class; epochs and px): none of them has a learning rate that is wrong
HEALTHY_SIZES = (2, 10, 60)
HEALTHY_LENGTHS = ((1, 64), (10, 112), (40, 64))


def subset(src: Path, dest: Path, per_class: int, seed: int = 0, shuffle: bool = False) -> None:
    """``per_class`` photos of each class of src (hard links), or with shuffle, the same
    photos each put into a class drawn at random."""
    rng = random.Random(seed)
    classes = sorted(p.name for p in src.iterdir() if p.is_dir())
    for name in classes:
        for photo in sorted((src / name).iterdir())[:per_class]:
            target = dest / (rng.choice(classes) if shuffle else name)
            target.mkdir(parents=True, exist_ok=True)
            (target / photo.name).hardlink_to(photo)


def copies(src: Path, dest: Path, per_class: int) -> None:
    """``per_class`` photos of each class, resized to 3/4 and recompressed."""
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        (dest / folder.name).mkdir(parents=True, exist_ok=True)
        for photo in sorted(folder.iterdir())[:per_class]:
            with Image.open(photo) as img:
                img.convert("RGB").resize((img.width * 3 // 4, img.height * 3 // 4)).save(
                    dest / folder.name / f"copy_{photo.stem}.jpg", quality=85)


def link_split(src: Path, dest: Path) -> None:
    for photo in src.rglob("*"):
        if photo.is_file():
            (dest / photo.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dest / photo.relative_to(src)).hardlink_to(photo)


def planted_data(data: Path, out: Path) -> dict[str, Path]:
    """The planted data sets (built once): each a train/ and val/ folder."""
    made = {}
    for name, build in (("shuffled", lambda d: (subset(data / "train", d / "train", 60, shuffle=True),
                                                  link_split(data / "val", d / "val"))),
                        ("five", lambda d: (subset(data / "train", d / "train", 5),
                                            link_split(data / "val", d / "val"))),
                        ("twenty", lambda d: (subset(data / "train", d / "train", 20),
                                              link_split(data / "val", d / "val"))),
                        ("copied", lambda d: (link_split(data / "train", d / "train"),
                                              copies(data / "train", d / "val", 60))),
                        *((f"per_class_{n}", lambda d, n=n: (subset(data / "train", d / "train", n),
                                                             link_split(data / "val", d / "val")))
                          for n in HEALTHY_SIZES)):
        folder = out / "data" / name
        if not (folder / "val").is_dir():
            build(folder)
        made[name] = folder
    return made


def cases(data: Path, planted: dict[str, Path]) -> list[tuple[str, str, list[str]]]:
    """(name, what is planted, train.py's arguments)."""
    d = str(data)
    return [
        ("healthy_tutorial", "none: the tutorial recipe", ["--data", d, *SIZE, "--recipe", "tutorial"]),
        ("healthy_default", "none: the default recipe", ["--data", d, *SIZE]),
        ("healthy_budget", "none: the budget recipe", ["--data", d, *SIZE, "--budget", "2m"]),
        ("shuffled", "shuffled labels (60 photos a class)",
         ["--data", str(planted["shuffled"]), *SIZE, "--epochs", "40"]),
        ("five", "5 photos per class", ["--data", str(planted["five"]), *SIZE, "--epochs", "30"]),
        ("lr_1e-6", "--lr 1e-6", ["--data", d, *SIZE, "--lr", "1e-6", "--epochs", "3"]),
        ("explosion", "a finite explosion (Adam at --lr 10)",
         ["--data", d, *SIZE, "--recipe", "tutorial", "--lr", "10"]),
        ("copied", "validation = 300 training photos resized and recompressed",
         ["--data", str(planted["copied"]), *SIZE, "--epochs", "1"]),
        ("twenty_long", "a long run on 20 photos per class",
         ["--data", str(planted["twenty"]), *SIZE, "--recipe", "long"]),
        ("lr_auto_short", "none: --lr auto on 20 photos per class, 16 s",
         ["--data", str(planted["twenty"]), *SIZE, "--lr", "auto", "--budget", "16s"]),
        *((f"healthy_{n}_{epochs}ep_{px}px", f"none: {n} photos a class, {epochs} epoch(s) at {px} px",
           ["--data", str(planted[f"per_class_{n}"]), "--img-size", str(px), "--epochs", str(epochs)])
          for n in HEALTHY_SIZES for epochs, px in HEALTHY_LENGTHS),
        ("healthy_all_1ep_224px", "none: all photos, 1 epoch at 224 px", ["--data", d, "--epochs", "1"]),
        ("healthy_60_5ep_224px", "none: 60 photos a class, 5 epochs at 224 px",
         ["--data", str(planted["per_class_60"]), "--epochs", "5"]),
    ]


def run_case(out: Path, name: str, args: list[str]) -> dict:
    run = out / name
    done = run / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    argv = [*args, "--output-dir", str(run), "--quiet", "--overwrite"]
    print(f"{name}: python train.py {' '.join(argv)}", flush=True)
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *argv], capture_output=True, text=True)
    said = [line for line in proc.stdout.splitlines() if line.startswith(("diagnosis (", "  next: "))]
    best = ""
    if (run / "metrics.csv").is_file():
        with open(run / "metrics.csv", newline="") as f:
            best = f"{max(float(r['val_top1']) for r in csv.DictReader(f)):.3f}"
    stopped = next((line for line in proc.stderr.splitlines() if line.startswith(("stopped:", "error:"))), "")
    result = {"command": "python train.py " + " ".join(args), "code": proc.returncode, "best_val_top1": best,
              "causes": [m.group(1) for line in said for m in [re.match(r"diagnosis \((\w+)\)", line)] if m],
              "said": said, "stopped": stopped}
    run.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a train/ val/ (test/) split of real photos")
    p.add_argument("--out", default="runs/planted")
    p.add_argument("--only", nargs="+", help="run only these cases")
    args = p.parse_args()
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = stamp(["python", "tools/plant_failures.py", *sys.argv[1:]])
    lines = [f"Commit {header['commit']}, {header['date']}, {header['cpu']}; `{header['command']}`", "",
             "| planted | command | exit | best val top-1 | diagnosis | its first words |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, planted, train_args in cases(data, planted_data(data, out)):
        if args.only and name not in args.only:
            continue
        r = run_case(out, name, train_args)
        first = next((line.split(": ", 1)[1] for line in r["said"] if line.startswith("diagnosis (")), "(nothing)")
        lines.append(f"| {planted} | `{r['command']}` | {r['code']} | {r['best_val_top1'] or '-'} | "
                     f"{', '.join(r['causes']) or 'none'} | {first[:160]}{'...' if len(first) > 160 else ''} |")
    text = "\n".join(lines) + "\n"
    (out / "planted.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Split raw ``<class>/<image>`` folders into ``train/`` and ``val/`` (ImageFolder layout).

    python data_set/split_data.py                                  # data_set/flower_photos -> data_set/flower_data
    python data_set/split_data.py ~/my_photos --dest data_set/my_data --val-ratio 0.2

Each class sends ``floor(n * val_ratio)`` images to val, drawn with ``random.Random(seed)``
from the sorted file list, classes in sorted order, so every machine gets the same
split (3306 train / 364 val on the full 3670-image flower_photos). Files are copied
(or hard-linked with --link); nothing is ever deleted, and an existing train/ or val/
is left alone: the tool refuses instead.
"""
import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class SplitError(Exception):
    pass


def plan_split(src: Path, val_ratio: float, seed: int) -> dict[str, tuple[list[str], list[str]]]:
    """{class: (train files, val files)}, deterministic for a given folder, ratio and seed."""
    if not src.is_dir():
        raise SplitError(f"{src}: source folder not found")
    classes = sorted(d.name for d in src.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise SplitError(f"{src}: no class folders inside (expected {src}/<class>/<image>.jpg)")
    rng = random.Random(seed)
    plan = {}
    for c in classes:
        files = sorted(f.name for f in (src / c).iterdir()
                       if f.is_file() and not f.name.startswith(".") and f.name.lower().endswith(IMG_EXTENSIONS))
        if not files:
            raise SplitError(f"{src / c}: class folder has no images")
        val = set(rng.sample(files, k=int(len(files) * val_ratio)))
        plan[c] = ([f for f in files if f not in val], sorted(val))
    return plan


def split(src: Path, dest: Path, val_ratio: float = 0.1, seed: int = 0, link: bool = False,
          quiet: bool = False) -> dict[str, int]:
    """Copy ``src/<class>/*`` into ``dest/{train,val}/<class>/``; returns the image counts."""
    if not 0 <= val_ratio < 1:
        raise SplitError(f"--val-ratio {val_ratio}: must be in [0, 1)")
    plan = plan_split(src, val_ratio, seed)
    for part in ("train", "val"):
        if (dest / part).exists():
            raise SplitError(f"{dest / part}: already exists; remove it yourself or pass another --dest")
    counts = {"train": 0, "val": 0}
    put = os.link if link else shutil.copy2
    for c, (train, val) in plan.items():
        for part, files in (("train", train), ("val", val)):
            (dest / part / c).mkdir(parents=True, exist_ok=True)
            for f in files:
                put(src / c / f, dest / part / c / f)
            counts[part] += len(files)
        if not quiet:
            print(f"{c:>12}: {len(train)} train, {len(val)} val")
    (dest / "split.json").write_text(json.dumps({"source": str(src), "val_ratio": val_ratio, "seed": seed,
                                                 "classes": list(plan), **counts}, indent=2))
    if not quiet:
        print(f"{counts['train']} train / {counts['val']} val images in {dest}")
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", nargs="?", default=str(HERE / "flower_photos"), help="folder of <class>/<image> folders")
    p.add_argument("--dest", default=str(HERE / "flower_data"), help="where train/ and val/ are created")
    p.add_argument("--val-ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--link", action="store_true", help="hard-link instead of copying (same disk only)")
    args = p.parse_args(argv)
    try:
        split(Path(args.src), Path(args.dest), args.val_ratio, args.seed, args.link)
    except (SplitError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

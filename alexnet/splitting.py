"""Split raw ``<class>/<image>`` folders into ``train/``, ``val/`` and optionally ``test/``:
deterministic per folder, ratios and seed, near-duplicates kept on one side, files copied or
hard-linked, never deleted (data_set/split_data.py and data_set/download.py)."""
import errno
import json
import os
import random
import shutil
from pathlib import Path

from alexnet import folders, lookalike
from alexnet.errors import ArgumentError, DataError, OutputError


def plan_split(src: Path, val_ratio: float, seed: int,
               test_ratio: float = 0.0) -> tuple[dict[str, dict[str, list[str]]], folders.Listing]:
    """{class: {"train": files, "val": files[, "test": files]}} as paths relative to the class
    folder, deterministic for a given folder, ratios and seed; and what was skipped."""
    classes = folders.find_classes(str(src))
    rng, test_rng = random.Random(seed), random.Random(f"test-{seed}")  # val is the same with or without test/
    plan, skipped, seen = {}, folders.Listing(), {}
    for c in classes:
        listing = folders.list_images(str(src / c), seen)
        skipped.add(listing)
        files = [os.path.relpath(f, src / c) for f in listing.files]
        parts = ("train", "val", "test") if test_ratio else ("train", "val")
        if len(files) < len(parts):
            raise DataError(f"{src / c}: class folder has {len(files)} image(s); each class needs at least "
                            f"{len(parts)}, one for each of {'/, '.join(parts)}/")
        groups = copy_groups(src / c, files)
        val = draw(rng, files, groups, max(1, int(len(files) * val_ratio)))
        rest = [f for f in files if f not in val]
        rest_groups = [g for g in groups if g[0] not in val]
        test = draw(test_rng, rest, rest_groups, max(1, int(len(files) * test_ratio))) if test_ratio and rest else set()
        train = [f for f in rest if f not in test]
        if not train or (test_ratio and not test):
            raise DataError(f"{src / c}: {len(files)} images; --val-ratio {val_ratio} and --test {test_ratio} "
                            f"leave none for {'train' if not train else 'test'}/ (near-duplicates go together)")
        plan[c] = {"train": train, "val": sorted(val)} | ({"test": sorted(test)} if test_ratio else {})
    return plan, skipped


def copy_groups(folder: Path, files: list[str]) -> list[list[str]]:
    """The class's files grouped with their near-duplicates (a perceptual hash, alexnet/lookalike.py within
    lookalike.DISTANCE bits: copies, resized or recompressed); a file without one is a group of one."""
    looks = [lookalike.look(str(folder / f)) for f in files]
    readable = [i for i, h in enumerate(looks) if h is not None]
    pairs = [(readable[a], readable[b], d) for a, b, d in lookalike.near_pairs([looks[i] for i in readable], lookalike.DISTANCE)]
    grouped = lookalike.groups_of(pairs, len(files))  # each group's indices sorted
    member = {i for g in grouped for i in g}
    singles = [[i] for i in range(len(files)) if i not in member]
    return [[files[i] for i in g] for g in sorted(grouped + singles)]  # in file order, by each group's first


def draw(rng: random.Random, files: list[str], groups: list[list[str]], k: int) -> set[str]:
    """``k`` files at random (``rng.sample``, the split of earlier versions, when no file has a
    near-duplicate); else whole groups in random order until they hold at least ``k`` files,
    so that no copy of a photo lands on the other side of the split."""
    if all(len(g) == 1 for g in groups):
        return set(rng.sample(files, k=k))
    chosen: set[str] = set()
    for g in rng.sample(groups, k=len(groups)):
        if len(chosen) >= k:
            break
        chosen.update(g)
    return chosen


def split(src: Path, dest: Path, val_ratio: float = 0.1, seed: int = 0, link: bool = False,
          quiet: bool = False, test_ratio: float = 0.0) -> dict[str, int]:
    """Copy ``src/<class>/*`` into ``dest/{train,val[,test]}/<class>/``; returns the image counts."""
    if not 0 < val_ratio < 1:
        raise ArgumentError(f"--val-ratio {val_ratio}: must be in (0, 1)")
    if not (test_ratio == 0 or 0 < test_ratio < 1 - val_ratio):
        raise ArgumentError(f"--test {test_ratio}: must be 0 (no test split) or in (0, {1 - val_ratio:g}), "
                            f"leaving images for train/ beside --val-ratio {val_ratio}")
    if not src.is_dir():
        raise DataError(f"{src}: source folder not found")
    if dest.resolve() == src.resolve() or dest.resolve().is_relative_to(src.resolve()):
        raise ArgumentError(f"--dest {dest}: is inside the source folder {src}; its train/ and val/ would "
                            f"become classes of the next split. Pick a folder outside it")
    plan, skipped = plan_split(src, val_ratio, seed, test_ratio)
    names = ("train", "val", "test") if test_ratio else ("train", "val")
    for part in ("train", "val", "test"):
        if (dest / part).exists():
            raise OutputError(f"{dest / part}: already exists; remove it yourself or pass another --dest")
    created = [p for p in (dest, *dest.parents) if not p.exists()]
    dest.mkdir(parents=True, exist_ok=True)
    # built under temporary names and renamed at the end: a failure (a full disk, --link across
    # disks) leaves no half-made train/ or val/ that the next run would refuse
    partial = {part: dest / f".{part}.partial-{os.getpid()}" for part in names}
    try:
        counts = fill(src, partial, plan, link, quiet)
        for part, folder in partial.items():
            folder.rename(dest / part)
    except OSError as e:
        why = "hard links cannot cross disks: drop --link to copy" if link and e.errno == errno.EXDEV else \
            (e.strerror or str(e))
        raise OutputError(f"{e.filename or dest}: {why}; nothing was kept in {dest}") from None
    finally:
        for folder in partial.values():
            shutil.rmtree(folder, ignore_errors=True)
        for p in created:  # innermost first; only if still empty (on failure)
            try:
                p.rmdir()
            except OSError:
                pass
    (dest / "split.json").write_text(json.dumps({"source": folders.printable(str(src)), "val_ratio": val_ratio,
                                                 "test_ratio": test_ratio, "seed": seed,
                                                 "classes": [folders.printable(c) for c in plan], **counts}, indent=2))
    if not quiet:
        if folders.describe_skipped(skipped):
            print(folders.describe_skipped(skipped))
        print(" / ".join(f"{n} {part}" for part, n in counts.items()) + f" images in {dest}")
    return counts


def fill(src: Path, parts: dict[str, Path], plan: dict, link: bool, quiet: bool) -> dict[str, int]:
    """Copy (or hard-link) every planned file into ``parts[train|val|test]/<class>/``."""
    counts = dict.fromkeys(parts, 0)
    put = os.link if link else shutil.copy2
    for c, files_of in plan.items():
        for part, files in files_of.items():
            (parts[part] / c).mkdir(parents=True, exist_ok=True)
            for f in files:
                target = parts[part] / c / f
                target.parent.mkdir(parents=True, exist_ok=True)
                put(src / c / f, target)
            counts[part] += len(files)
        if not quiet:
            print(f"{folders.printable(c):>12}: " + ", ".join(f"{len(f)} {part}" for part, f in files_of.items()))
    return counts

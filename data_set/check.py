"""Check an image data set before training on it: class balance, duplicates, leakage between
splits, photos filed under two classes, and unreadable or unusual images.

    python data_set/check.py data_set/flower_data                  # report into runs/check/
    python data_set/check.py my_data --output-dir my_check --strict # exit 1 on leakage or conflicting labels

DATA holds train/ and val/ (and test/) class folders, as split_data.py writes them. Every
image is decoded once: its pixels are hashed (exact duplicates: the same upright RGB pixels)
and so is its look, with a 64-bit perceptual hash (pHash: the signs of the lowest 8 x 8 DCT
coefficients of a 32 x 32 grey copy, as the imagehash library computes it), so that a resized
or recompressed copy is found too (a Hamming distance up to --distance, default 4). Groups of
copies are reported by where they sit: within one class, across classes (conflicting labels)
and across splits (leakage: validation then measures memory). Also per split and class the
image counts and the imbalance (largest class / smallest), and the unreadable, tiny, greyscale,
alpha and EXIF-rotated images and the file formats.

Writes into --output-dir: report.md, report.json, class_counts.png and duplicates.png (each
group of copies side by side). The hashes are cached there (hashes.json, keyed by file path,
size and modification time), so a second check of an unchanged folder decodes nothing; only
hashes are held, never images, so memory stays flat as the folder grows. Exit code 0; with
--strict, 1 when it finds leakage or conflicting labels; 2 for unusable input.
"""
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project folder: its scripts and alexnet/

from alexnet import figures, folders, images, outputs  # noqa: E402
from alexnet.checkpoint import MIN_IMG_SIZE as TINY  # noqa: E402  smaller photos are blown up to it
from alexnet.errors import ArgumentError, DataError, OneLineParser, run_main  # noqa: E402
from alexnet.lookalike import DISTANCE, groups_of, near_pairs, phash  # noqa: E402

SPLITS = ("train", "val", "test")
CACHE_VERSION = 2


def get_args_parser() -> OneLineParser:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="a folder with train/ and val/ (and test/) class folders")
    p.add_argument("--output-dir", default="runs/check", help="where the report, figures and hash cache go")
    p.add_argument("--distance", type=int, default=DISTANCE, help="largest pHash Hamming distance of a near-duplicate "
                   "(0-16; 0: identical looks only)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any photo is in two splits or two classes")
    p.add_argument("--max-shown", type=int, default=24, help="groups of copies drawn in duplicates.png")
    return p


# ---------------------------------------------------------------- one image


def describe(path: str) -> dict:
    """What the check needs to know about one image file; never the pixels themselves."""
    import hashlib

    try:
        with images.open_image(path) as img:
            info = {"format": img.format or "?", "mode": img.mode, "width": img.width, "height": img.height,
                    "rotated": img.getexif().get(0x0112, 1) not in (1, None)}
            rgb = images.upright_rgb(img, path)
    except DataError as e:
        return {"error": str(e).replace(f"{path}: ", "", 1)}
    except OSError as e:  # vanished or unreadable between listing and reading
        return {"error": e.strerror or str(e)}
    look = phash(rgb)
    info |= {"pixels": hashlib.sha1(rgb.tobytes() + repr(rgb.size).encode()).hexdigest(),
             "phash": None if look is None else f"{look:016x}",
             "grey": info["mode"] in ("1", "L", "LA", "I", "F") or info["mode"].startswith("I;16"),
             "alpha": info["mode"] in ("RGBA", "LA", "PA") or (info["mode"] == "P" and "transparency" in img.info)}
    return info


class HashCache:
    """describe()'s results, keyed by path, size and modification time, in OUTPUT_DIR/hashes.json."""

    def __init__(self, path: Path):
        self.path, self.entries, self.fresh = path, {}, 0
        try:
            saved = json.loads(path.read_text())
            if saved.get("version") == CACHE_VERSION:
                self.entries = saved["files"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # no cache, or one from another version: every image is decoded again
        self.used: dict[str, dict] = {}

    def get(self, path: str) -> dict:
        st = os.stat(path)
        key = os.path.abspath(path)
        entry = self.entries.get(key)
        if not entry or entry["size"] != st.st_size or entry["mtime_ns"] != st.st_mtime_ns:
            entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, **describe(path)}
            self.fresh += 1
        self.used[key] = entry
        return entry

    def save(self) -> None:
        outputs.write_text(self.path, json.dumps({"version": CACHE_VERSION, "files": self.used}))


# ---------------------------------------------------------------- the folder
def find_splits(data: Path) -> dict[str, list[str]]:
    """{split: classes} of DATA's train/, val/ and test/; one line for a folder that is none."""
    if not data.is_dir():
        raise DataError(f"{data}: data folder not found")
    present = [s for s in SPLITS if (data / s).is_dir()]
    if "train" not in present:
        raise DataError(f"{data}: no train/ folder; give the folder split_data.py wrote (train/, val/ and test/ "
                        f"class folders), e.g. python data_set/split_data.py {data} --dest DATA --test 0.1")
    folders.separate_splits(str(data))
    splits = {s: folders.find_classes(str(data / s)) for s in present}
    if len(splits["train"]) < 2:
        raise DataError(f"{data / 'train'}: only one class folder ({splits['train'][0]}); a classifier needs at "
                        f"least two")
    return splits


def scan(data: Path, splits: dict[str, list[str]], cache: HashCache) -> tuple[list[dict], Counter]:
    """One record per image file (split, class, path, and describe()'s fields), and what was skipped."""
    records, skipped = [], Counter()
    for split, classes in splits.items():
        for c in classes:
            listing = folders.list_images(str(data / split / c))
            skipped += listing.skipped
            if not listing.files:
                raise DataError(f"{data / split / c}: class folder has no images")
            for path in listing.files:
                records.append({"split": split, "class": c, "path": path, **cache.get(path)})
    return records, skipped


def where(group: list[int], records: list[dict]) -> list[str]:
    """What is wrong with a group of copies: leakage (two splits), conflicting labels (two
    classes), or copies within one class."""
    kinds = []
    if len({records[i]["split"] for i in group}) > 1:
        kinds.append("leakage")
    if len({records[i]["class"] for i in group}) > 1:
        kinds.append("conflicting labels")
    return kinds or ["within class"]


def find_copies(records: list[dict], distance: int) -> list[dict]:
    """Groups of exact copies (the same pixels) and of near-duplicates (pHash within ``distance``)."""
    readable = [i for i, r in enumerate(records) if "error" not in r]
    by_pixels = defaultdict(list)
    for i in readable:
        by_pixels[records[i]["pixels"]].append(i)
    exact = [sorted(g) for g in by_pixels.values() if len(g) > 1]
    exact_key = {i: n for n, g in enumerate(exact) for i in g}
    looks = [i for i in readable if records[i]["phash"] is not None]
    pairs = [(looks[a], looks[b], d) for a, b, d in near_pairs([int(records[i]["phash"], 16) for i in looks], distance)]
    near = [g for g in groups_of(pairs, len(records))
            if len({exact_key.get(i, -1 - i) for i in g}) > 1]  # more than one set of pixels: not only exact copies
    found = []
    for kind, groups in (("exact", exact), ("near", near)):
        for g in groups:
            found.append({"kind": kind, "where": where(g, records),
                          "images": [{k: records[i][k] for k in ("split", "class", "path")} for i in g]})
    return found


def pair_count(group: dict) -> int:
    n = len(group["images"])
    return n * (n - 1) // 2


# ---------------------------------------------------------------- the report
def summarise(data: Path, splits: dict, records: list[dict], copies: list[dict], skipped: Counter,
              distance: int) -> dict:
    counts = {s: {c: sum(1 for r in records if r["split"] == s and r["class"] == c) for c in classes}
              for s, classes in splits.items()}
    readable = [r for r in records if "error" not in r]
    issues = Counter(k for g in copies for k in g["where"])
    return {
        "data": folders.printable(str(data)), "images": len(records), "distance": distance,
        "counts": counts,
        "imbalance": {s: max(c.values()) / max(min(c.values()), 1) for s, c in counts.items()},
        "classes_only_in": {s: sorted(set(splits["train"]) ^ set(classes)) for s, classes in splits.items()
                            if set(classes) != set(splits["train"])},
        "unreadable": [{"path": folders.printable(r["path"]), "error": r["error"]} for r in records if "error" in r],
        "tiny": sum(min(r["width"], r["height"]) < TINY for r in readable),
        "greyscale": sum(r["grey"] for r in readable), "alpha": sum(r["alpha"] for r in readable),
        "exif_rotated": sum(r["rotated"] for r in readable),
        "formats": dict(Counter(r["format"] for r in readable).most_common()),
        "skipped_files": dict(skipped),
        "groups": {kind: sum(1 for g in copies if g["kind"] == kind) for kind in ("exact", "near")},
        "pairs": {k: sum(pair_count(g) for g in copies if k in g["where"])
                  for k in ("leakage", "conflicting labels", "within class")},
        "groups_by_issue": dict(issues),
        "copies": [g | {"images": [i | {"path": folders.printable(i["path"])} for i in g["images"]]} for g in copies],
    }


def report_md(s: dict, elapsed: float, decoded: int) -> str:
    splits = list(s["counts"])
    classes = sorted({c for counts in s["counts"].values() for c in counts})
    lines = [f"# Data check: {s['data']}", "",
             f"{s['images']} images; {decoded} decoded, the rest from the hash cache; {elapsed:.1f} s.", "",
             "| class | " + " | ".join(splits) + " |", "| --- |" + " --- |" * len(splits)]
    lines += [f"| {folders.printable(c)} | " + " | ".join(str(s["counts"][sp].get(c, 0)) for sp in splits) + " |"
              for c in classes]
    lines += ["| imbalance (largest / smallest) | " + " | ".join(f"{s['imbalance'][sp]:.1f}:1" for sp in splits) + " |",
              ""]
    p = s["pairs"]
    lines += [f"- copies across splits (leakage): {p['leakage']} pairs",
              f"- copies in two classes (conflicting labels): {p['conflicting labels']} pairs",
              f"- copies within one class: {p['within class']} pairs",
              f"  ({s['groups']['exact']} groups of identical pixels, {s['groups']['near']} of near-duplicates: "
              f"pHash within {s['distance']} bits)",
              f"- unreadable: {len(s['unreadable'])}; smaller than {TINY} px: {s['tiny']}; greyscale: {s['greyscale']};"
              f" with alpha: {s['alpha']}; EXIF-rotated: {s['exif_rotated']}",
              "- formats: " + ", ".join(f"{k} {v}" for k, v in s["formats"].items())]
    if s["skipped_files"]:
        lines.append("- files that are no images, left out: " + ", ".join(f"{v} {k}" for k, v in s["skipped_files"].items()))
    for s_name, names in s["classes_only_in"].items():
        lines.append(f"- {s_name}/ and train/ differ in classes: {', '.join(names)}")
    for r in s["unreadable"]:
        lines.append(f"- unreadable: {r['path']}: {r['error']}")
    shown = [g for g in s["copies"] if g["where"] != ["within class"]][:50]
    if shown:
        lines += ["", "## Copies across splits or classes", ""]
        for g in shown:
            lines.append(f"- {g['kind']}, {' and '.join(g['where'])}: " +
                         "; ".join(f"{i['split']}/{i['class']}: {i['path']}" for i in g["images"]))
    return "\n".join(lines) + "\n"


def plot_counts(counts: dict, path: Path) -> None:
    classes = sorted({c for split in counts.values() for c in split})
    fig = figures.new_figure(max(6.0, 0.35 * len(classes) * len(counts) + 2), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(counts)
    for k, (split, per_class) in enumerate(counts.items()):
        ax.bar([i + k * width for i in range(len(classes))], [per_class.get(c, 0) for c in classes], width,
               label=split)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(classes))])
    ax.set_xticklabels([folders.printable(c) for c in classes], rotation=45 if len(classes) > 8 else 0, ha="right"
                       if len(classes) > 8 else "center", fontsize=max(5, min(10, 200 // max(len(classes), 1))))
    ax.set(ylabel="images", title="images per class and split")
    ax.legend()
    fig.tight_layout()
    figures.save_with_font_hint(fig, path)


def plot_copies(copies: list[dict], path: Path, most: int) -> int:
    """duplicates.png: each group of copies as a row of thumbnails, leakage and conflicts first."""
    ranked = sorted(copies, key=lambda g: (g["where"] == ["within class"], -len(g["images"])))[:most]
    if not ranked:
        return 0
    cols = min(6, max(len(g["images"]) for g in ranked))
    fig = figures.new_figure(2.2 * cols, 2.4 * len(ranked))
    for r, group in enumerate(ranked):
        for c, item in enumerate(group["images"][:cols]):
            ax = fig.add_subplot(len(ranked), cols, r * cols + c + 1)
            with images.open_image(item["path"]) as img:
                img.thumbnail((320, 320))
                ax.imshow(images.upright_rgb(img, item["path"]))
            ax.set_title(f"{item['split']}/{folders.printable(item['class'])}\n{os.path.basename(item['path'])[:24]}",
                         fontsize=7, color="crimson" if group["where"] != ["within class"] else "black")
            ax.axis("off")
    fig.suptitle(f"{len(ranked)} groups of copies (red: across splits or classes)")
    fig.tight_layout()
    figures.save_with_font_hint(fig, path, dpi=80)
    return len(ranked)


def check(data: Path, out: Path, distance: int = DISTANCE, most: int = 24, quiet: bool = False) -> dict:
    """The whole check; returns report.json's content."""
    if not 0 <= distance <= 16:
        raise ArgumentError(f"--distance {distance}: must be in 0..16")
    if out.resolve().is_relative_to(data.resolve()):
        raise ArgumentError(f"--output-dir {out}: is inside the data folder {data}; the report would mix with the "
                            f"images. Pick a folder outside it")
    started = time.monotonic()
    splits = find_splits(data)
    outputs.check_writable_folder(out, "--output-dir")
    out.mkdir(parents=True, exist_ok=True)
    cache = HashCache(out / "hashes.json")
    records, skipped = scan(data, splits, cache)
    cache.save()
    summary = summarise(data, splits, records, find_copies(records, distance), skipped, distance)
    summary["seconds"], summary["decoded"] = time.monotonic() - started, cache.fresh
    outputs.write_text(out / "report.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    text = report_md(summary, summary["seconds"], cache.fresh)
    outputs.write_text(out / "report.md", text)
    plot_counts(summary["counts"], out / "class_counts.png")
    plot_copies([g for g in summary["copies"]], out / "duplicates.png", most)
    if not quiet:
        print(text + f"\nreport, figures and hash cache in {out}")
    return summary


def main(args) -> int:
    summary = check(Path(args.data), Path(args.output_dir), args.distance, args.max_shown)
    bad = summary["pairs"]["leakage"] + summary["pairs"]["conflicting labels"]
    return 1 if args.strict and bad else 0


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())

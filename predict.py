"""Classify photos with a trained AlexNet.

    python predict.py tulip.jpg                         # uses runs/best.pth from train.py
    python predict.py photos/ --topk 3 --no-show        # every image in a folder, top 3 each
    python predict.py a.jpg b.png --tta --save out.png  # 10-crop averaging, figure to a file
    python predict.py img.jpg --model_path AlexNet.pth --class_indices class_indices.json  # tutorial weights

Prints the top class and its probability, then each class's probability, and shows
the image(s) titled with the prediction. Exit code 0: all predicted; 1: some files
could not be read (the others are still predicted); 2: unusable weights or arguments.
Only torch and Pillow are imported up front (no torchvision); matplotlib only when a
figure is shown or saved, so a one-image prediction starts fast.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import torch

import data
from model import CheckpointError, from_checkpoint, load_checkpoint, probabilities

DEFAULT_WEIGHTS = "runs/best.pth"
MAX_SHOWN = 16  # images in the figure; all of them are printed


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Classify images with a trained AlexNet.")
    p.add_argument("paths", nargs="+", help="image files and/or folders of images")
    p.add_argument("--weights", "--model_path", dest="weights", default=DEFAULT_WEIGHTS,
                   help="a train.py checkpoint, or a raw state_dict such as the tutorial's AlexNet.pth")
    p.add_argument("--class-indices", "--class_indices", dest="class_indices",
                   help='{"0": "daisy", ...}; needed for a raw state_dict (default ./class_indices.json then)')
    p.add_argument("--topk", type=int, help="list only the k most likely classes (default: all)")
    p.add_argument("--tta", action="store_true", help="average the 10 crops (corners, centre, mirrored)")
    p.add_argument("--device", default="cpu", help="cpu (fastest start for a few images), cuda, mps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--save", metavar="FIG.png", help="write the figure to this file")
    p.add_argument("--no-show", action="store_true", help="do not open a window")
    return p


def read_class_indices(path: str) -> list[str]:
    try:
        mapping = json.loads(Path(path).read_text(encoding="utf-8"))
        names = [mapping[str(i)] for i in range(len(mapping))]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: class index file not found (pass --class-indices)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
    except (KeyError, AttributeError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f'{path}: expected {{"0": "class name", "1": ...}} with keys 0..n-1') from None
    return names


def class_names(ckpt: dict, args) -> list[str]:
    """The checkpoint's own names; a class_indices.json must agree with them."""
    own = ckpt.get("classes")
    path = args.class_indices or (None if own else "class_indices.json")
    names = read_class_indices(path) if path else own
    if len(names) != ckpt["num_classes"]:
        raise CheckpointError(f"{path}: lists {len(names)} classes, but {args.weights} has {ckpt['num_classes']} outputs")
    if own and names != own:
        raise CheckpointError(f"{path}: classes {names} disagree with {args.weights}: {own}")
    return names


def expand(paths: list[str]) -> tuple[list[str], list[str]]:
    """Files as given, folders as their image files (sorted, recursive); plus errors."""
    files, errors = [], []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(str(f) for f in Path(p).rglob("*") if f.is_file() and data.is_image_file(str(f)))
            files += found
            if not found:
                errors.append(f"{p}: folder has no images")
        elif os.path.exists(p):
            files.append(p)
        else:
            errors.append(f"{p}: no such file or folder")
    return files, errors


def predict(model, files: list[str], transform, mean, std, device, batch_size: int):
    """Yield (path, probabilities or None, error or None), batching readable images."""
    views = 10 if transform.tta else 1
    batch: list[tuple[str, torch.Tensor]] = []

    def flush():
        x = data.normalize(torch.stack([img for _, img in batch]).to(device), mean, std)
        with torch.inference_mode():
            probs = probabilities(model, x, views).cpu()
        out = [(path, p, None) for (path, _), p in zip(batch, probs)]
        batch.clear()
        return out

    for path in files:
        try:
            batch.append((path, transform(data.open_rgb(path))))
        except data.DataError as e:
            yield path, None, str(e)
        if len(batch) == batch_size:
            yield from flush()
    if batch:
        yield from flush()


def has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def show_figure(results: list[tuple[str, str, float]], save: str | None, show: bool) -> None:
    import matplotlib
    if not show:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    if len(results) > MAX_SHOWN:
        print(f"(the figure shows the first {MAX_SHOWN} of {len(results)} images)")
        results = results[:MAX_SHOWN]
    cols = min(4, len(results))
    rows = -(-len(results) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (path, name, p) in zip(axes.flat, results):
        with Image.open(path) as img:
            ax.imshow(img.convert("RGB"))
        ax.set_title(f"{name} {p:.3f}\n{os.path.basename(path)}", fontsize=10)
    fig.tight_layout()
    if save:
        fig.savefig(save, dpi=100)
        print(f"figure saved to {save}")
    if show:
        plt.show()
    plt.close(fig)


def main(args) -> int:
    ckpt = load_checkpoint(args.weights, mmap=True)
    names = class_names(ckpt, args)
    device = torch.device(args.device)
    model = from_checkpoint(ckpt, args.weights).to(device, memory_format=torch.channels_last).eval()
    ev = ckpt.get("eval", {"size": 224, "resize": 0})  # a raw state_dict: the tutorial's Resize((224, 224))
    transform = data.EvalTransform(ev["size"], ev["resize"], args.tta)
    mean, std = ckpt.get("mean", [0.5] * 3), ckpt.get("std", [0.5] * 3)
    files, errors = expand(args.paths)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    k = min(args.topk or len(names), len(names))
    shown = []
    for path, probs, err in predict(model, files, transform, mean, std, device, args.batch_size):
        if err:
            errors.append(err)
            print(f"error: {err}", file=sys.stderr)
            continue
        top = probs.topk(k)
        best = top.indices[0].item()
        print(f"{path}: {names[best]} {probs[best]:.3f}")
        for p, i in zip(top.values.tolist(), top.indices.tolist()):
            print(f"    {names[i]:<16} {p:.3f}")
        shown.append((path, names[best], probs[best].item()))
    show = not args.no_show and has_display()
    if shown and (args.save or show):
        show_figure(shown, args.save, show)
    elif shown and not args.no_show:
        print("(no display found: pass --save fig.png to write the figure, --no-show to skip it)")
    if errors:
        print(f"{len(errors)} of {len(errors) + len(shown)} input(s) failed", file=sys.stderr)
        return 1
    return 0


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        return main(args)
    except (CheckpointError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())

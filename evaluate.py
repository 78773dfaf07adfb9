"""Score a trained AlexNet on a folder of labelled images, and see where it fails and what it learned.

    python evaluate.py                                        # runs/best.pth on the val/ split it was trained with
    python evaluate.py --data data_set/flower_data/val        # any ImageFolder split (class sub-folders)
    python evaluate.py --data my_test_photos --tta --topk 2   # a separate test folder, 10-crop testing
    python evaluate.py --weights AlexNet.pth --class-indices class_indices.json --data DIR   # tutorial weights

Prints top-1 and top-k, a per-class table (precision, recall, F1, support, macro and
support-weighted averages) and the most confused pairs, and writes to --output-dir
(default: eval/ beside the checkpoint):

    summary.json          top1, top<k>, macro_f1, images, and the weights and data used
    per_class.csv         the per-class table
    predictions.csv       one row per image: true and predicted class, their probabilities, top-k
    confusion_matrix.png  counts and row-normalised
    mistakes.png          the most confidently wrong images (highest loss, fastai's "top losses")
    conv1_filters.png     the first layer's kernels (the paper's figure 3)
    neighbours.png        the training images nearest to a few test images in the last hidden
                          layer (the paper's figure 4, right)

Images take train.py's validation path (the same evaluation transform, the decode-once
cache, batched inference), so top-1 on the val/ split is the checkpoint's best_acc. Exit
code 0; 1 if some images could not be read (the rest are scored); 2 for unusable
weights, data or options.
"""
from errors import quiet_startup_interrupt

if __name__ == "__main__":
    quiet_startup_interrupt()  # Ctrl-C while torch loads: one line, not a traceback

import csv
import io
import json
import math
import os
import sys
from pathlib import Path

import torch

import data
import folders
import outputs
import predict
from machine import Machine, cache_budget, predict_batches, progress
from errors import ArgumentError, CheckpointError, DataError, OneLineParser, run_main

NEIGHBOURS = 6  # training images shown for each test image in neighbours.png, as in the paper


def get_args_parser() -> OneLineParser:
    p = OneLineParser(description="Score a trained AlexNet on labelled images; write a report and figures.")
    a = p.add_argument
    a("--weights", "--model_path", dest="weights", default=predict.DEFAULT_WEIGHTS,
      help="a train.py checkpoint, or a raw state_dict (then with --class-indices, as in predict.py)")
    a("--class-indices", "--class_indices", dest="class_indices", help='{"0": "daisy", ...} for a raw state_dict')
    a("--data", help="an ImageFolder split, or a folder holding val/ (default: the val/ split the checkpoint was "
      "trained on)")
    a("--output-dir", help="where the report goes (default: eval/ beside the checkpoint)")
    a("--tta", action="store_true", default=None, help="10-crop testing (default: as the checkpoint was validated)")
    a("--topk", type=int, default=5, help="also report top-k accuracy (capped at the class count)")
    a("--skip-unknown", action="store_true", help="leave out class folders the model does not know, with a "
      "warning (default: an error)")
    a("--mistakes", type=int, default=16, help="images in mistakes.png (0: no figure)")
    a("--neighbours", type=int, default=5, help="test images in neighbours.png (0: no figure, and no pass over "
      "the training images)")
    a("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    a("--batch-size", type=int, default=0, help="0: 32 on a CPU, 256 on a GPU")
    a("--quiet", action="store_true", help="no progress bars")
    return p


# ---------------------------------------------------------------- what is evaluated
def find_split(path: str | None, trained_on: str | None, classes: list[str]) -> str:
    """--data as given (a split, or a root holding val/), else the val/ split of the training data."""
    if path is None:
        if not trained_on:
            raise ArgumentError("--data: this model file does not say which data it was trained on; pass --data DIR")
        path = os.path.join(trained_on, "val")
    elif os.path.isdir(os.path.join(path, "val")) and "val" not in classes:
        path = os.path.join(path, "val")
    if not os.path.isdir(path):
        raise DataError(f"{path}: data folder not found")
    return path


def match_classes(split: str, known: list[str], skip_unknown: bool) -> list[str]:
    """The split's class folders, matched to the model's classes by name."""
    found = folders.find_classes(split, print)
    unknown = [c for c in found if c not in known]
    if unknown and not skip_unknown:
        raise DataError(f"{os.path.join(split, unknown[0])}: the model does not know class {unknown[0]!r} "
                        f"(it knows {', '.join(known)}); pass --skip-unknown to leave such folders out")
    if unknown:
        print(f"warning: left out {len(unknown)} class folder(s) the model does not know: {', '.join(unknown)}")
    kept = [c for c in found if c in known]
    if not kept:
        raise DataError(f"{split}: none of its class folders is a class of the model ({', '.join(known)})")
    return kept


class Relabelled(torch.utils.data.Dataset):
    """A split's images with their targets as the model's class indices."""

    def __init__(self, dataset, index: list[int]):
        self.dataset, self.index = dataset, index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, target = self.dataset[i]
        return image, self.index[target]


def load_split(root: str, classes: list[str], model_classes: list[str], transform: data.EvalTransform,
               cache_dir: str | None, quiet: bool) -> data.Split:
    """The split decoded once (or read from the run's cache, as train.py left it), with
    unreadable images left out and listed, and targets as the model's class indices."""
    policy = data.CachePolicy(cache_dir, cache_budget(-1), "skip", quiet)
    split = data.build_split(root, classes, transform, None, policy, print)
    index = [model_classes.index(c) for c in classes]
    return data.Split(Relabelled(split.dataset, index), [(p, index[t]) for p, t in split.samples], model_classes,
                      split.bad)


def collect(model, loader, machine: Machine, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities and targets of every image, through train.py's validation batches."""
    probs, targets = [], []
    for p, t in predict_batches(model, loader, machine, mean, std, desc="evaluate"):
        probs.append(p)
        targets.append(t)
    return torch.cat(probs), torch.cat(targets)


# ---------------------------------------------------------------- metrics
def confusion_matrix(targets: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[true class, predicted class]."""
    return torch.bincount(targets * num_classes + predicted, minlength=num_classes ** 2).view(num_classes, num_classes)


def class_metrics(confusion: torch.Tensor) -> dict:
    """Per-class precision, recall, F1 and support, and their macro and support-weighted
    averages over the classes that occur (as a true or a predicted label). A class that
    nothing was predicted as has precision 0, not a division by zero."""
    conf = confusion.double()
    tp, support, predicted = conf.diag(), conf.sum(1), conf.sum(0)
    zero = torch.zeros_like(tp)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), zero)
    recall = torch.where(support > 0, tp / support.clamp_min(1), zero)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), zero)
    occurs = (support > 0) | (predicted > 0)
    weights = support / support.sum().clamp_min(1)
    table = {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
             "support": support.long().tolist()}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        table[f"macro_{name}"] = values[occurs].mean().item()
        table[f"weighted_{name}"] = (values * weights).sum().item()
    return table


def most_confused(confusion: torch.Tensor, names: list[str], count: int = 5) -> list[tuple[str, str, int]]:
    """(true class, predicted class, images) for the largest counts off the diagonal."""
    off = confusion.clone()
    off.fill_diagonal_(0)
    values, flat = off.flatten().topk(min(count, off.numel()))
    n = len(names)
    return [(names[i // n], names[i % n], v) for v, i in zip(values.tolist(), flat.tolist()) if v > 0]


def topk_accuracy(probs: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    return (probs.topk(k, dim=1).indices == targets[:, None]).any(1).double().mean().item()


def print_report(names: list[str], probs: torch.Tensor, targets: torch.Tensor, k: int, table: dict,
                 confusion: torch.Tensor) -> None:
    print(f"\n{len(targets)} images: top-1 {topk_accuracy(probs, targets, 1):.4f}  top-{k} "
          f"{topk_accuracy(probs, targets, k):.4f}  macro F1 {table['macro_f1']:.4f}\n")
    width = max(12, *(len(folders.printable(n)) for n in names))
    print(f"{'class':<{width}}  precision  recall      f1  support")
    for i, name in enumerate(names):
        print(f"{folders.printable(name):<{width}}  {table['precision'][i]:9.4f}  {table['recall'][i]:6.4f}  "
              f"{table['f1'][i]:6.4f}  {table['support'][i]:7d}")
    for avg in ("macro", "weighted"):
        print(f"{avg + ' avg':<{width}}  {table[f'{avg}_precision']:9.4f}  {table[f'{avg}_recall']:6.4f}  "
              f"{table[f'{avg}_f1']:6.4f}  {sum(table['support']):7d}")
    pairs = most_confused(confusion, names)
    if pairs:
        print("\nmost confused (true -> predicted: images):")
        for true, pred, n in pairs:
            print(f"  {folders.printable(true)} -> {folders.printable(pred)}: {n}")


# ---------------------------------------------------------------- files
def write_tables(out: Path, names: list[str], split: data.Split, probs: torch.Tensor, k: int, summary: dict) -> None:
    """summary.json, per_class.csv and predictions.csv."""
    table = summary.pop("table")
    rows = [[folders.printable(n), table["precision"][i], table["recall"][i], table["f1"][i], table["support"][i]]
            for i, n in enumerate(names)]
    rows += [[f"{avg} avg", table[f"{avg}_precision"], table[f"{avg}_recall"], table[f"{avg}_f1"],
              sum(table["support"])] for avg in ("macro", "weighted")]
    outputs.write_text(out / "per_class.csv", csv_text(["class", "precision", "recall", "f1", "support"], rows))
    top = probs.topk(k, dim=1)
    rows = [[folders.printable(path), folders.printable(names[t]), folders.printable(names[top.indices[i, 0]]),
             round(top.values[i, 0].item(), 6), round(probs[i, t].item(), 6),
             " ".join(folders.printable(names[j]) for j in top.indices[i].tolist())]
            for i, (path, t) in enumerate(split.samples)]
    outputs.write_text(out / "predictions.csv", csv_text(
        ["path", "true", "predicted", "probability", "true_probability", f"top{k}"], rows))
    outputs.write_text(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")


def csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


# ---------------------------------------------------------------- figures
def new_figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas: no display, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def plot_confusion(confusion: torch.Tensor, names: list[str], path: Path) -> None:
    """Counts and row-normalised side by side; cell numbers and font sizes shrink, and the
    figure grows, with the class count, so 100 classes stay legible."""
    n = len(names)
    side = min(40.0, max(5.0, 0.22 * n + 2.5))
    fig = new_figure(2 * side + 1.5, side + 1)
    rows = confusion.double() / confusion.sum(1, keepdim=True).clamp_min(1)
    label_size = max(4.0, min(10.0, 300 / max(n, 1)))
    labels = [folders.printable(c) for c in names]
    for ax, values, title in zip(fig.subplots(1, 2), (confusion.double(), rows), ("images", "share of each true class")):
        image = ax.imshow(values.numpy(), cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set(title=title, xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n))
        ax.set_xticklabels(labels, rotation=90, fontsize=label_size)
        ax.set_yticklabels(labels, fontsize=label_size)
        if n <= 20:
            for (i, j), v in zip(((i, j) for i in range(n) for j in range(n)), values.flatten().tolist()):
                text = f"{v:.0f}" if title == "images" else f"{v:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=label_size,
                        color="white" if v > values.max().item() / 2 else "black")
    fig.tight_layout()
    outputs.save_figure(fig, path)


def thumbnail(path: str, side: int = 256):
    """An image for a figure: upright (EXIF), RGB, at most ``side`` px."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.thumbnail((side * 2, side * 2))
        img = ImageOps.exif_transpose(img).convert("RGB")
        img.thumbnail((side, side))
        return img


def plot_mistakes(split: data.Split, probs: torch.Tensor, targets: torch.Tensor, names: list[str], count: int,
                  path: Path) -> int:
    """The ``count`` wrong predictions with the highest loss; returns how many were shown."""
    wrong = (probs.argmax(1) != targets).nonzero().flatten()
    loss = -probs[wrong, targets[wrong]].clamp_min(1e-12).log()
    shown = wrong[loss.argsort(descending=True)][:count].tolist()
    if not shown:
        return 0
    cols = min(4, len(shown))
    fig = new_figure(3.2 * cols, 3.4 * math.ceil(len(shown) / cols))
    for n, i in enumerate(shown):
        ax = fig.add_subplot(math.ceil(len(shown) / cols), cols, n + 1)
        ax.imshow(thumbnail(split.samples[i][0]))
        p = probs[i].max().item()
        true, predicted = folders.printable(names[targets[i]]), folders.printable(names[probs[i].argmax()])
        ax.set_title(f"true {true}\npredicted {predicted} {p:.2f}", fontsize=9)
        ax.axis("off")
    fig.suptitle("most confidently wrong (highest loss first)")
    fig.tight_layout()
    outputs.save_figure(fig, path)
    return len(shown)


def plot_filters(model: torch.nn.Module, path: Path) -> None:
    """The first convolution's kernels, each scaled to the full range (paper figure 3)."""
    from torchvision.utils import make_grid

    weight = model.features[0].weight.detach().float().cpu()
    grid = make_grid(weight, nrow=int(math.ceil(math.sqrt(len(weight)))), normalize=True, scale_each=True,
                     padding=1, pad_value=1.0)
    fig = new_figure(7, 7)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(f"conv1: {weight.shape[0]} kernels of {weight.shape[2]}x{weight.shape[3]} px, RGB")
    ax.axis("off")
    outputs.save_figure(fig, path)


def hidden_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last hidden layer's activations (after its ReLU): what the paper's figure 4 compares."""
    return model.classifier[:-1](torch.flatten(model.avgpool(model.features(x)), 1))


def nearest(queries: torch.Tensor, bank: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    """Indices of the ``k`` rows of ``bank`` nearest to each query (Euclidean, exact), read
    in chunks so that memory holds queries x chunk distances at most."""
    best_d = torch.empty(len(queries), 0)
    best_i = torch.empty(len(queries), 0, dtype=torch.long)
    for start in range(0, len(bank), chunk):
        d = torch.cat([best_d, torch.cdist(queries, bank[start:start + chunk])], 1)
        i = torch.cat([best_i, torch.arange(start, min(start + chunk, len(bank))).expand(len(queries), -1)], 1)
        order = d.argsort(dim=1, stable=True)[:, :k]
        best_d, best_i = d.gather(1, order), i.gather(1, order)
    return best_i


@torch.inference_mode()
def features_of(model, loader, machine: Machine, mean, std) -> torch.Tensor:
    model.eval()
    chunks = []
    for images, _ in progress(loader, machine, "features"):
        x = data.normalize(images.to(machine.device), mean, std)
        with machine.autocast():
            chunks.append(hidden_features(model, x).float().cpu())
    return torch.cat(chunks)


def plot_neighbours(queries: list[str], found: list[list[str]], path: Path) -> None:
    cols = NEIGHBOURS + 1
    fig = new_figure(1.8 * cols, 1.9 * len(queries))
    for r, (query, near) in enumerate(zip(queries, found)):
        for c, image in enumerate([query, *near]):
            ax = fig.add_subplot(len(queries), cols, r * cols + c + 1)
            ax.imshow(thumbnail(image, 160))
            ax.axis("off")
            if r == 0:
                ax.set_title("test image" if c == 0 else f"nearest {c}", fontsize=9)
    fig.suptitle("training images nearest in the last hidden layer")
    fig.tight_layout()
    outputs.save_figure(fig, path)


def neighbours_figure(count: int, model, machine: Machine, classifier, split: data.Split, trained_on: str | None,
                      out: Path) -> str:
    """neighbours.png for ``count`` test images, or why it was not drawn."""
    train_root = os.path.join(trained_on, "train") if trained_on else None
    if not train_root or not os.path.isdir(train_root):
        return "neighbours.png not drawn: the training images are not at hand (pass --neighbours 0 to skip)"
    bank = load_split(train_root, [c for c in folders.find_classes(train_root) if c in classifier.names],
                      classifier.names, classifier.transform, None, machine.quiet)
    loader = lambda ds: torch.utils.data.DataLoader(ds, 32 if machine.device.type == "cpu" else 256)  # noqa: E731
    bank_features = features_of(model, loader(bank.dataset), machine, classifier.mean, classifier.std)
    picks = torch.linspace(0, len(split.samples) - 1, min(count, len(split.samples))).round().long().tolist()
    query_features = features_of(model, loader(torch.utils.data.Subset(split.dataset, picks)), machine,
                                 classifier.mean, classifier.std)
    found = nearest(query_features, bank_features, NEIGHBOURS)
    plot_neighbours([split.samples[i][0] for i in picks], [[bank.samples[j][0] for j in row] for row in found.tolist()],
                    out / "neighbours.png")
    return f"neighbours.png: {len(picks)} test images, each with its {NEIGHBOURS} nearest of {len(bank.samples)} " \
           f"training images"


# ---------------------------------------------------------------- the run
def check_args(args) -> None:
    for option, value, low in (("--topk", args.topk, 1), ("--mistakes", args.mistakes, 0),
                               ("--neighbours", args.neighbours, 0), ("--batch-size", args.batch_size, 0)):
        if not low <= value <= 4096:
            raise ArgumentError(f"{option} {value}: must be in {low}..4096")
    if args.weights.lower().endswith(".onnx"):
        raise CheckpointError(f"{args.weights}: evaluate.py needs the PyTorch checkpoint (its figures look inside "
                              f"the network); give the .pth the ONNX file was exported from")


def main(args) -> int:
    check_args(args)
    classifier = predict.load_classifier(args.weights, args.device, False, args.class_indices)
    names, card = classifier.names, classifier.card
    split_root = find_split(args.data, card["data"], names)
    out = Path(args.output_dir) if args.output_dir else Path(args.weights).resolve().parent / outputs.EVAL_FOLDER
    if out.resolve().is_relative_to(Path(split_root).resolve()):
        raise ArgumentError(f"--output-dir {out}: is inside the data folder {split_root}; the report would mix "
                            f"with the images. Pick a folder outside it")
    outputs.check_writable_folder(out, "--output-dir")
    classifier.transform = data.EvalTransform(classifier.transform.size, classifier.transform.resize,
                                              bool(card["tta"]) if args.tta is None else args.tta)
    # fp32, as predict.py, app.py and the ONNX model: the same image gets the same probabilities everywhere
    machine = Machine(classifier.device, "fp32", quiet=args.quiet)
    cache = Path(args.weights).resolve().parent / ".cache"  # train.py's: its val/ crops are there already
    split = load_split(split_root, match_classes(split_root, names, args.skip_unknown), names, classifier.transform,
                       str(cache) if cache.is_dir() else None, args.quiet)
    loader = torch.utils.data.DataLoader(split.dataset, args.batch_size or (32 if machine.device.type == "cpu" else 256))
    probs, targets = collect(classifier.model, loader, machine, classifier.mean, classifier.std)
    if not torch.isfinite(probs).all():
        raise CheckpointError(f"{args.weights}: the model gives NaN or infinite probabilities: its weights are broken")
    k = min(args.topk, len(names))
    confusion = confusion_matrix(targets, probs.argmax(1), len(names))
    table = class_metrics(confusion)
    print_report(names, probs, targets, k, table, confusion)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"top1": topk_accuracy(probs, targets, 1), f"top{k}": topk_accuracy(probs, targets, k),
               "macro_f1": table["macro_f1"], "weighted_f1": table["weighted_f1"], "images": len(targets),
               "unreadable": len(split.bad), "weights": str(args.weights), "data": split_root,
               "tta": classifier.transform.tta, "checkpoint_best_acc": card["best_acc"], "table": table}
    write_tables(out, names, split, probs, k, summary)
    plot_confusion(confusion, names, out / "confusion_matrix.png")
    plot_filters(classifier.model, out / "conv1_filters.png")
    if args.mistakes:
        plot_mistakes(split, probs, targets, names, args.mistakes, out / "mistakes.png")
    if args.neighbours:
        print(neighbours_figure(args.neighbours, classifier.model, machine, classifier, split, card["data"], out))
    print(f"report and figures in {out}")
    if split.bad:
        print(f"{len(split.bad)} image(s) could not be read; the other {len(targets)} were scored", file=sys.stderr)
    return 1 if split.bad else 0


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())

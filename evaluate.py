"""Score a trained AlexNet on a folder of labelled images, and see where it fails and what it learned.

    python evaluate.py                                        # runs/best.pth on its data's test/ split (else val/)
    python evaluate.py --data data_set/flower_data/val        # any ImageFolder split (class sub-folders)
    python evaluate.py --data my_test_photos --tta --topk 2   # a separate test folder, 10-crop testing
    python evaluate.py --compare runs_b/best.pth              # A against B on the same images: McNemar
    python evaluate.py --calibrate                            # fit the temperature on val/, store it
    python evaluate.py --ood data_set/demo_shapes --store-threshold   # "not one of my classes": AUROC, threshold
    python evaluate.py --weights runs/best.onnx               # an ONNX export (no look inside the network)
    python evaluate.py --weights AlexNet.pth --class-indices class_indices.json --data DIR   # tutorial weights

Prints top-1 with its 95% interval (Wilson), top-k, macro-F1 and each class's recall with
theirs (a seeded bootstrap over the images), a per-class table, the most confused pairs and
the calibration (expected calibration error, ECE), and writes to --output-dir (default:
eval/ beside the checkpoint):

    summary.json          top1, top<k>, macro_f1 and their intervals, ece, the split scored, the comparison,
                          the out-of-class scores (--ood)
    per_class.csv         the per-class table
    predictions.csv       one row per image: true and predicted class, their probabilities, top-k
    confusion_matrix.png  counts and row-normalised
    reliability.png       accuracy against confidence (the calibration)
    ood.png               the top probability of the split's and the out-of-class images (--ood)
    mistakes.png          the most confidently wrong images (highest loss, fastai's "top losses")
    conv1_filters.png     the first layer's kernels (the paper's figure 3)
    neighbours.png        the training images nearest to a few test images in the last hidden
                          layer (the paper's figure 4, right)

The split scored: --data, or the training data's test/ when it has one (split_data.py --test),
else its val/, which chose the checkpoint and so flatters it (the report says so). Images take
train.py's validation path (the same evaluation transform, the decode-once cache, batched
inference), so top-1 on the val/ split is the checkpoint's best_acc. --calibrate fits one
temperature on val/ (never the split scored when there is a test/), writes it into the
checkpoint, and predict.py, app.py and export.py apply it; the predicted classes never change
(a stored --min-confidence threshold no longer fits then, and is dropped). --ood FOLDER scores
images of no known class against the split: the AUROC of the top probability, and the
threshold that rejects --false-rejection (5%) of the val/ images, with the share of the
out-of-class images it rejects (ood.png); --store-threshold writes it into the checkpoint for
``predict.py --min-confidence auto`` (and export.py's ONNX metadata).
Exit code 0; 1 if some images could not be read (the rest are scored); 2 for unusable
weights, data or options.
"""
import alexnet.startup  # noqa: F401  first: Ctrl-C while torch loads is one line, not a traceback

import json
import os
import sys
from pathlib import Path

import torch

from alexnet import checkpoint, datasets, folders, outputs, stats, transforms
from alexnet.classifier import DEFAULT_WEIGHTS, TorchClassifier, load_classifier, predict_files
from alexnet.datasets import CachedImageFolder
from alexnet.errors import ArgumentError, CheckpointError, DataError, OneLineParser, run_main
from alexnet.figures import plot_confusion, plot_filters, plot_mistakes, plot_neighbours, plot_ood, plot_reliability
from alexnet.machine import Machine, cache_budget, eval_batch_size, predict_batches, progress
from model import calibrated

NEIGHBOURS = 6  # training images shown for each test image in neighbours.png, as in the paper


def get_args_parser() -> OneLineParser:
    p = OneLineParser(description="Score a trained AlexNet on labelled images; write a report and figures.")
    a = p.add_argument
    a("--weights", "--model_path", dest="weights", default=DEFAULT_WEIGHTS,
      help="a train.py checkpoint, a raw state_dict (then with --class-indices, as in predict.py) or an .onnx export")
    a("--class-indices", "--class_indices", dest="class_indices", help='{"0": "daisy", ...} for a raw state_dict')
    a("--data", help="an ImageFolder split, or a folder holding test/ or val/ (default: the test/ split of the data "
      "the checkpoint was trained on, else its val/)")
    a("--compare", metavar="WEIGHTS", help="also score this model (.pth or .onnx, the same classes and eval size) on "
      "the same images: the top-1 difference with its interval and an exact McNemar test")
    a("--calibrate", action="store_true", help="fit the temperature on the val/ split and store it in the checkpoint: "
      "predict.py, app.py and export.py then report calibrated probabilities")
    a("--ood", metavar="FOLDER", help="images of none of the model's classes (searched recursively): how well the top "
      "probability tells them from the split's, and the threshold for --false-rejection")
    a("--false-rejection", type=float, default=0.05, help="--ood: the share of val/ images the threshold may reject "
      "(default 0.05)")
    a("--store-threshold", action="store_true", help="--ood: write the threshold into the checkpoint "
      "(predict.py --min-confidence auto)")
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
SPLITS = ("test", "val")  # what a data root is scored on, in order of preference


def find_split(path: str | None, trained_on: str | None, classes: list[str]) -> tuple[str, str]:
    """(folder, which split): --data as given (a split, or a root holding test/ or val/),
    else the training data's test/ split, or its val/ when it has none."""
    if path is None and not trained_on:
        raise ArgumentError("--data: this model file does not say which data it was trained on; pass --data DIR")
    root = trained_on if path is None else path
    for part in SPLITS:
        if os.path.isdir(os.path.join(root, part)) and part not in classes:
            return os.path.join(root, part), part
    if path is None:
        raise DataError(f"{os.path.join(root, 'val')}: data folder not found")
    if not os.path.isdir(path):
        raise DataError(f"{path}: data folder not found")
    name = os.path.basename(os.path.normpath(path))
    return path, name if name in SPLITS else "given"


def calibration_split(split_root: str, which: str, trained_on: str | None) -> str:
    """The val/ split the temperature is fitted on: beside the split scored, else the training data's."""
    near = os.path.join(os.path.dirname(os.path.normpath(split_root)), "val")
    if which in SPLITS and os.path.isdir(near):
        return near
    if trained_on and os.path.isdir(os.path.join(trained_on, "val")):
        return os.path.join(trained_on, "val")
    raise DataError(f"--calibrate: no val/ split found beside {split_root} or in the training data; the temperature "
                    f"is fitted on the validation images")


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


def load_split(root: str, classes: list[str], model_classes: list[str], transform: transforms.EvalTransform,
               cache_dir: str | None, quiet: bool) -> CachedImageFolder:
    """The split as an ImageFolder decoded once (or read from the run's cache, as train.py
    left it), with unreadable images left out and listed, and targets as the model's class indices."""
    policy = datasets.CachePolicy(cache_dir, cache_budget(-1), "skip", quiet)
    return CachedImageFolder(root, policy, pre_transform=transform, log=print,
                             class_to_idx={c: model_classes.index(c) for c in classes})


def raw_probabilities(classifier, split: CachedImageFolder, machine: Machine, batch_size: int,
                      own_views: bool = False) -> torch.Tensor:
    """Every image's probabilities before calibration (temperature 1), in the split's order:
    through train.py's validation batches for a PyTorch model, or as predict.py reads files
    for an ONNX one (Pillow and numpy) or a model whose views differ from the split's
    (``own_views``: another resize rule)."""
    if isinstance(classifier, TorchClassifier) and not own_views:
        loader = torch.utils.data.DataLoader(split, batch_size)
        return torch.cat([p for p, _ in predict_batches(classifier.model, loader, machine, classifier.mean,
                                                        classifier.std, desc="evaluate")])
    temperature, classifier.temperature = classifier.temperature, 1.0
    try:
        rows = list(predict_files(classifier, [path for path, _ in split.samples], batch_size))
    finally:
        classifier.temperature = temperature
    unread = next((path for path, p, _ in rows if p is None), None)
    if unread is not None:
        raise DataError(f"{unread}: decoded for the split but not by the ONNX path's Pillow reader")
    return torch.tensor([p for _, p, _ in rows])


# ---------------------------------------------------------------- metrics
def class_metrics(confusion: torch.Tensor) -> dict:
    """Per-class precision, recall, F1 and support, and their macro and support-weighted
    averages over the classes that occur (as a true or a predicted label). A class that
    nothing was predicted as has precision 0, not a division by zero."""
    conf = confusion.double()
    support, predicted = conf.sum(1), conf.sum(0)
    precision, recall, f1 = stats.precision_recall_f1(conf.diag(), support, predicted)
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


def topk_hits(probs: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    return (probs.topk(k, dim=1).indices == targets[:, None]).any(1)


def topk_accuracy(probs: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    return topk_hits(probs, targets, k).double().mean().item()


def intervals(probs: torch.Tensor, targets: torch.Tensor, k: int) -> dict:
    """95% intervals: top-1 by Wilson's formula; top-k, macro-F1 and each class's recall by a
    seeded bootstrap over the images (their per-image structure has no closed form)."""
    n, num_classes = probs.shape
    predicted, hits = probs.argmax(1), topk_hits(probs, targets, k).double()

    def statistic(index: torch.Tensor) -> torch.Tensor:
        counts = stats.resampled_counts(targets, predicted, num_classes, index)
        return torch.cat([hits[index].mean(1, keepdim=True), stats.macro_f1_and_recall(counts)], 1)

    low_high = stats.bootstrap(statistic, n)
    return {"top1": list(stats.wilson(int((predicted == targets).sum()), n)), f"top{k}": low_high[:, 0].tolist(),
            "macro_f1": low_high[:, 1].tolist(), "recall": low_high[:, 2:].T.tolist()}


def span(low_high) -> str:
    return f"{low_high[0]:.4f}-{low_high[1]:.4f}"


def print_report(names: list[str], probs: torch.Tensor, targets: torch.Tensor, k: int, table: dict,
                 confusion: torch.Tensor, ci: dict, scored: str) -> None:
    print(f"\n{len(targets)} images ({scored}): top-1 {topk_accuracy(probs, targets, 1):.4f} (95% CI {span(ci['top1'])})"
          f"  top-{k} {topk_accuracy(probs, targets, k):.4f} ({span(ci[f'top{k}'])})  macro F1 "
          f"{table['macro_f1']:.4f} ({span(ci['macro_f1'])})\n")
    width = max(12, *(folders.width(n) for n in names))
    print(f"{'class':<{width}}  precision  recall  recall 95% CI      f1  support")
    for i, name in enumerate(names):
        print(f"{folders.column(name, width)}  {table['precision'][i]:9.4f}  {table['recall'][i]:6.4f}  "
              f"{span(ci['recall'][i]):>13}  {table['f1'][i]:6.4f}  {table['support'][i]:7d}")
    for avg in ("macro", "weighted"):
        print(f"{avg + ' avg':<{width}}  {table[f'{avg}_precision']:9.4f}  {table[f'{avg}_recall']:6.4f}  "
              f"{'':>13}  {table[f'{avg}_f1']:6.4f}  {sum(table['support']):7d}")
    pairs = most_confused(confusion, names)
    if pairs:
        print("\nmost confused (true -> predicted: images):")
        for true, pred, n in pairs:
            print(f"  {folders.printable(true)} -> {folders.printable(pred)}: {n}")


# ---------------------------------------------------------------- files
def write_tables(out: Path, names: list[str], split: CachedImageFolder, probs: torch.Tensor, k: int,
                 summary: dict) -> None:
    """summary.json, per_class.csv and predictions.csv."""
    table = summary.pop("table")
    recall_ci = summary["ci"]["recall"]
    rows = [[folders.printable(n), table["precision"][i], table["recall"][i], *recall_ci[i], table["f1"][i],
             table["support"][i]] for i, n in enumerate(names)]
    rows += [[f"{avg} avg", table[f"{avg}_precision"], table[f"{avg}_recall"], "", "", table[f"{avg}_f1"],
              sum(table["support"])] for avg in ("macro", "weighted")]
    outputs.write_csv(out / "per_class.csv", outputs.csv_text(
        ["class", "precision", "recall", "recall_ci_low", "recall_ci_high", "f1", "support"], rows))
    top = probs.topk(k, dim=1)
    rows = [[folders.printable(path), folders.printable(names[t]), folders.printable(names[top.indices[i, 0]]),
             round(top.values[i, 0].item(), 6), round(probs[i, t].item(), 6),
             *(folders.printable(names[j]) for j in top.indices[i].tolist())]
            for i, (path, t) in enumerate(split.samples)]
    outputs.write_csv(out / "predictions.csv", outputs.csv_text(
        ["path", "true", "predicted", "probability", "true_probability", *(f"top_{j}" for j in range(1, k + 1))],
        rows))
    outputs.write_text(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- figures


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
        x = transforms.normalize(images.to(machine.device), mean, std)
        with machine.autocast():
            chunks.append(hidden_features(model, x).float().cpu())
    return torch.cat(chunks)


def neighbours_figure(count: int, model, machine: Machine, classifier, split: CachedImageFolder, trained_on: str | None,
                      out: Path) -> str:
    """neighbours.png for ``count`` test images, or why it was not drawn."""
    train_root = os.path.join(trained_on, "train") if trained_on else None
    if not train_root or not os.path.isdir(train_root):
        return "neighbours.png not drawn: the training images are not at hand (pass --neighbours 0 to skip)"
    bank = load_split(train_root, [c for c in folders.find_classes(train_root) if c in classifier.names],
                      classifier.names, classifier.transform, None, machine.quiet)
    loader = lambda ds: torch.utils.data.DataLoader(ds, eval_batch_size(machine.device))  # noqa: E731
    bank_features = features_of(model, loader(bank), machine, classifier.mean, classifier.std)
    picks = torch.linspace(0, len(split.samples) - 1, min(count, len(split.samples))).round().long().tolist()
    query_features = features_of(model, loader(torch.utils.data.Subset(split, picks)), machine,
                                 classifier.mean, classifier.std)
    found = nearest(query_features, bank_features, NEIGHBOURS)
    plot_neighbours([split.samples[i][0] for i in picks], [[bank.samples[j][0] for j in row] for row in found.tolist()],
                    out / "neighbours.png")
    return f"neighbours.png: {len(picks)} test images, each with its {NEIGHBOURS} nearest of {len(bank.samples)} " \
           f"training images"


# ---------------------------------------------------------------- two models, and calibration
def load_other(args, classifier, tta: bool):
    """--compare's model: it must name the same classes and take inputs of the same size (it
    may resize differently: each model sees the images as it was validated)."""
    other = load_classifier(args.compare, args.device, tta, args.class_indices)
    if other.names != classifier.names:
        raise ArgumentError(f"--compare {args.compare}: its classes ({', '.join(other.names)}) differ from "
                            f"{args.weights}'s ({', '.join(classifier.names)}); compare models of the same classes")
    if other.transform.size != classifier.transform.size:
        raise ArgumentError(f"--compare {args.compare}: it evaluates {other.transform.size} px crops, {args.weights} "
                            f"{classifier.transform.size} px; compare models of one evaluation size")
    return other


def compare_models(a_name: str, a_probs: torch.Tensor, b_name: str, b_probs: torch.Tensor,
                   targets: torch.Tensor) -> dict:
    """B against A on the same images: the top-1 difference with a paired bootstrap interval,
    and an exact McNemar test on the images exactly one of the two got right."""
    right_a, right_b = a_probs.argmax(1) == targets, b_probs.argmax(1) == targets
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    diff = right_b.double() - right_a.double()
    low, high = stats.bootstrap(lambda index: diff[index].mean(1), len(targets)).tolist()
    delta, p = diff.mean().item(), stats.mcnemar(only_a, only_b)
    test = f"exact McNemar: {only_b} images only B got right, {only_a} only A"
    if p < 0.05:
        better, sign = ("B", 1) if delta > 0 else ("A", -1)
        lo, hi = sorted((sign * low, sign * high))
        verdict = (f"{better} is better by {abs(delta) * 100:.1f} points, 95% CI {lo * 100:.1f} to {hi * 100:.1f}, "
                   f"p = {p:.2g} ({test})")
    else:
        verdict = (f"no difference detectable on {len(targets)} images: B - A = {delta * 100:+.1f} points, 95% CI "
                   f"{low * 100:.1f} to {high * 100:.1f}, p = {p:.2g} ({test})")
    return {"a": a_name, "b": b_name, "top1_a": right_a.double().mean().item(), "top1_b": right_b.double().mean().item(),
            "difference": delta, "difference_ci": [low, high], "only_a": only_a, "only_b": only_b, "p_value": p,
            "verdict": verdict}


def fit_and_store_temperature(args, classifier, machine: Machine, val_root: str, cache: str | None,
                              batch_size: int) -> float:
    """--calibrate: the temperature that calibrates the val/ split, written into the checkpoint."""
    val = load_split(val_root, match_classes(val_root, classifier.names, args.skip_unknown), classifier.names,
                     classifier.transform, cache, args.quiet)
    targets = torch.tensor([t for _, t in val.samples])
    temperature = stats.fit_temperature(raw_probabilities(classifier, val, machine, batch_size), targets)
    ckpt = checkpoint.update(args.weights, {"temperature": temperature, "min_confidence": None})
    print(f"temperature {temperature:.3f}, fitted on {val_root} ({len(targets)} images), written into {args.weights}"
          f" (export it again to calibrate its ONNX file)")
    if ckpt["min_confidence"] is not None and not args.store_threshold:
        print(f"its stored --min-confidence threshold {ckpt['min_confidence']:.3f} was for the old temperature and "
              f"is dropped: evaluate.py --ood FOLDER --store-threshold finds a new one")
    return temperature


# ---------------------------------------------------------------- images of no known class
def ood_scores(classifier, files: list[str], temperature: float, batch_size: int) -> tuple[torch.Tensor, int]:
    """(top probability of each readable file, calibrated as predict.py reports it; files unread)."""
    kept, classifier.temperature = classifier.temperature, temperature
    try:
        rows = list(predict_files(classifier, files, batch_size))
    finally:
        classifier.temperature = kept
    scores = torch.tensor([max(p) for _, p, _ in rows if p is not None])
    if not len(scores):
        raise DataError(f"--ood: none of its {len(files)} images could be read")
    return scores, len(rows) - len(scores)


def threshold_probabilities(args, classifier, split_root: str, which: str, machine: Machine,
                            transform: transforms.EvalTransform, cache: str | None,
                            batch_size: int) -> torch.Tensor | None:
    """The val/ images' raw probabilities, which choose the threshold; None where there is no
    val/ beside the split or in the training data (then the split scored chooses it)."""
    try:
        root = calibration_split(split_root, which, classifier.card["data"])
    except DataError:
        print(f"note: no val/ split found; the --ood threshold is chosen on the images scored, {split_root}")
        return None
    val = load_split(root, match_classes(root, classifier.names, args.skip_unknown), classifier.names, transform,
                     cache, args.quiet)
    return raw_probabilities(classifier, val, machine, batch_size)


def ood_report(args, known: torch.Tensor, val: torch.Tensor, unknown: torch.Tensor, which: str) -> dict:
    """The AUROC of the split's top probabilities against the out-of-class images', and the
    threshold that rejects --false-rejection of the val/ images."""
    threshold = stats.rejection_threshold(val, args.false_rejection)
    report = {"folder": args.ood, "images": len(unknown), "auroc": stats.auroc(known, unknown),
              "false_rejection_target": args.false_rejection, "threshold": threshold,
              "rejected_unknown": (unknown < threshold).double().mean().item(),
              "rejected_val": (val < threshold).double().mean().item(),
              "rejected_split": (known < threshold).double().mean().item(), "split": which}
    print(f"\nout of class: {len(unknown)} images of {args.ood}\n"
          f"  AUROC of the top probability, {which} split against them: {report['auroc']:.4f}\n"
          f"  threshold for {args.false_rejection:.0%} false rejections on val/ ({len(val)} images): {threshold:.4f}; "
          f"it rejects {report['rejected_unknown']:.1%} of the out-of-class images and "
          f"{report['rejected_split']:.1%} of the {which} split")
    return report


def store_threshold(weights: str, threshold: float) -> None:
    checkpoint.update(weights, {"min_confidence": threshold})
    print(f"threshold {threshold:.4f} written into {weights}: predict.py --min-confidence auto uses it "
          f"(export it again to carry it into its ONNX file)")


# ---------------------------------------------------------------- the run
def check_args(args) -> None:
    for option, value, low in (("--topk", args.topk, 1), ("--mistakes", args.mistakes, 0),
                               ("--neighbours", args.neighbours, 0), ("--batch-size", args.batch_size, 0)):
        if not low <= value <= 4096:
            raise ArgumentError(f"{option} {value}: must be in {low}..4096")
    for flag, wanted in (("--calibrate", args.calibrate), ("--store-threshold", args.store_threshold)):
        if wanted and args.weights.lower().endswith(".onnx"):
            raise ArgumentError(f"{flag}: {args.weights} is an ONNX export; run it on the .pth it was exported from, "
                                f"then export it again")
    if not 0 < args.false_rejection < 1:
        raise ArgumentError(f"--false-rejection {args.false_rejection}: must be in (0, 1)")
    if args.store_threshold and not args.ood:
        raise ArgumentError("--store-threshold: needs --ood FOLDER (the threshold is chosen against those images)")


def main(args) -> int:
    check_args(args)
    classifier = load_classifier(args.weights, args.device, False, args.class_indices)
    names, card = classifier.names, classifier.card
    if (args.calibrate or args.store_threshold) and card["epoch"] is None:
        raise CheckpointError(f"{args.weights}: a bare state_dict has no place for a temperature or a threshold; "
                              f"{'--calibrate' if args.calibrate else '--store-threshold'} needs a train.py checkpoint")
    split_root, which = find_split(args.data, card["data"], names)
    out = Path(args.output_dir) if args.output_dir else Path(args.weights).resolve().parent / outputs.EVAL_FOLDER
    if out.resolve().is_relative_to(Path(split_root).resolve()):
        raise ArgumentError(f"--output-dir {out}: is inside the data folder {split_root}; the report would mix "
                            f"with the images. Pick a folder outside it")
    outputs.check_writable_folder(out, "--output-dir")
    tta = bool(card["tta"]) if args.tta is None else args.tta
    classifier.transform = type(classifier.transform)(classifier.transform.size, classifier.transform.resize, tta)
    other = load_other(args, classifier, tta) if args.compare else None
    val_root = calibration_split(split_root, which, card["data"]) if args.calibrate else None
    unknown_files = folders.images_of(args.ood, "--ood") if args.ood else None  # checked before any scoring
    # fp32, as predict.py, app.py and the ONNX model: the same image gets the same probabilities everywhere
    machine = Machine(getattr(classifier, "device", torch.device("cpu")), "fp32", quiet=args.quiet)
    cache = Path(args.weights).resolve().parent / ".cache"  # train.py's: its val/ crops are there already
    cache = str(cache) if cache.is_dir() else None
    transform = transforms.EvalTransform(classifier.transform.size, classifier.transform.resize, tta)
    split = load_split(split_root, match_classes(split_root, names, args.skip_unknown), names, transform, cache,
                       args.quiet)
    batch = args.batch_size or eval_batch_size(machine.device)
    temperature = fit_and_store_temperature(args, classifier, machine, val_root, cache, batch) if args.calibrate \
        else classifier.temperature
    raw = raw_probabilities(classifier, split, machine, batch)
    if not torch.isfinite(raw).all():
        raise CheckpointError(f"{args.weights}: the model gives NaN or infinite probabilities: its weights are broken")
    probs, targets = calibrated(raw, temperature), torch.tensor([t for _, t in split.samples])
    k = min(args.topk, len(names))
    confusion = stats.confusion_matrix(targets, probs.argmax(1), len(names))
    table, ci = class_metrics(confusion), intervals(probs, targets, k)
    bins = stats.expected_calibration_error(probs, targets)
    raw_ece = stats.expected_calibration_error(raw, targets)["ece"] if temperature != 1.0 else None
    print_report(names, probs, targets, k, table, confusion, ci, f"{which} split {split_root}")
    print(f"\ncalibration: ECE {bins['ece']:.4f} ({stats.ECE_BINS} bins), temperature {temperature:.3f}"
          + (f" (uncalibrated: ECE {raw_ece:.4f})" if raw_ece is not None else
             "; evaluate.py --calibrate fits one on val/"))
    if which == "val":
        print("note: val/ is the split that chose this checkpoint (its best epoch), so its score is optimistic; "
              "hold out a test split with  python data_set/split_data.py SRC --test 0.1")
    comparison = None
    if other is not None:
        own_views = other.transform.resize != classifier.transform.resize
        other_probs = calibrated(raw_probabilities(other, split, machine, batch, own_views), other.temperature)
        comparison = compare_models(str(args.weights), probs, str(args.compare), other_probs, targets)
        print(f"\nA = {args.weights}: top-1 {comparison['top1_a']:.4f}; B = {args.compare}: top-1 "
              f"{comparison['top1_b']:.4f}\n{comparison['verdict']}")
    ood = None
    if args.ood:
        raw_val = None if which == "val" else threshold_probabilities(args, classifier, split_root, which, machine,
                                                                      transform, cache, batch)
        val_probs = probs if raw_val is None else calibrated(raw_val, temperature)
        unknown, unread = ood_scores(classifier, unknown_files, temperature, batch)
        ood = ood_report(args, probs.max(1).values, val_probs.max(1).values, unknown, which) | {"unreadable": unread}
        if args.store_threshold:
            store_threshold(args.weights, ood["threshold"])
    out.mkdir(parents=True, exist_ok=True)
    top1 = topk_accuracy(probs, targets, 1)
    summary = {"top1": top1, f"top{k}": topk_accuracy(probs, targets, k), "macro_f1": table["macro_f1"],
               "weighted_f1": table["weighted_f1"], "ci": ci, "ece": bins["ece"], "ece_uncalibrated": raw_ece,
               "temperature": temperature, "images": len(targets), "unreadable": len(split.bad), "split": which,
               "weights": str(args.weights), "data": split_root, "tta": tta, "checkpoint_best_acc": card["best_acc"],
               "compare": comparison, "ood": ood, "table": table}
    write_tables(out, names, split, probs, k, summary)
    plot_confusion(confusion, names, out / "confusion_matrix.png",
                   f"top-1 {top1:.3f} (95% CI {span(ci['top1'])}) on {len(targets)} images of {which}")
    plot_reliability(bins, raw_ece, temperature, out / "reliability.png")
    if ood:
        plot_ood(probs.max(1).values, unknown, ood, out / "ood.png")
    if args.mistakes:
        plot_mistakes(split, probs, targets, names, args.mistakes, out / "mistakes.png")
    if isinstance(classifier, TorchClassifier):
        plot_filters(classifier.model, out / "conv1_filters.png")
        if args.neighbours:
            print(neighbours_figure(args.neighbours, classifier.model, machine, classifier, split, card["data"], out))
    else:
        print("conv1_filters.png and neighbours.png not drawn: they look inside the network, which an ONNX file hides")
    print(f"report and figures in {out}")
    if split.bad:
        print(f"{len(split.bad)} image(s) could not be read; the other {len(targets)} were scored", file=sys.stderr)
    return 1 if split.bad else 0


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())

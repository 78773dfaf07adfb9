"""Classify photos with a trained AlexNet.

    python predict.py tulip.jpg                         # uses runs/best.pth from train.py
    python predict.py photos/ --topk 3 --no-show        # every image in a folder, top 3 each
    python predict.py a.jpg b.png --tta --save out.png  # 10-crop averaging, figure to a file
    python predict.py tulip.jpg --cam --save cam.png    # where the network looked (Grad-CAM)
    python predict.py img.jpg --model_path AlexNet.pth --class_indices class_indices.json  # tutorial weights
    python predict.py photos/ --output preds.csv        # a big folder: one row per image, resumable
    python predict.py photos/ --min-confidence auto     # "unknown" below the threshold evaluate.py --ood stored

Prints the top class and its probability, then each class's probability, and shows
the image(s) titled with the prediction. With --output, writes one row per image to a
.csv or .json file instead (predictions.py: incremental, resumable) under a progress bar.
With --min-confidence P, an image whose top probability is below P is answered
``unknown`` (the top classes are still listed). Exit code 0: all predicted; 1: some files
could not be read (the others are still predicted); 2: unusable weights or arguments.
Only torch and Pillow are imported (no torchvision), and matplotlib only when a figure
is shown or saved, so a one-image prediction starts fast.
"""
import math
import os
import sys
from pathlib import Path

from alexnet import folders, images, outputs, predictions
from alexnet.classifier import DEFAULT_WEIGHTS, TorchClassifier, check_finite, expand, load_classifier, predict_files
from alexnet.errors import ArgumentError, DataError, OneLineParser, OutputError, run_main
from alexnet.figures import MAX_SHOWN, NO_DISPLAY, cam_overlay, has_display, show_figure
from alexnet.predictions import UNKNOWN


def get_args_parser() -> OneLineParser:
    p = OneLineParser(description="Classify images with a trained AlexNet.")
    p.add_argument("paths", nargs="+", help="image files and/or folders of images")
    p.add_argument("--weights", "--model_path", dest="weights", default=DEFAULT_WEIGHTS,
                   help="a train.py checkpoint, or a raw state_dict such as the tutorial's AlexNet.pth")
    p.add_argument("--class-indices", "--class_indices", dest="class_indices",
                   help='{"0": "daisy", ...}; needed for a raw state_dict (default ./class_indices.json then)')
    p.add_argument("--topk", type=int, help="list only the k most likely classes (default: all)")
    p.add_argument("--tta", action="store_true", help="average the 10 crops (corners, centre, mirrored)")
    p.add_argument("--device", default="cpu", help="cpu (fastest start for a few images), cuda, mps")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (1-1024)")
    p.add_argument("--save", metavar="FIG.png", help="write the figure to this file")
    p.add_argument("--no-show", action="store_true", help="do not open a window")
    p.add_argument("--cam", action="store_true", help="overlay a Grad-CAM heat-map of the predicted class (from "
                   "the last convolution) on each image in the figure")
    p.add_argument("--output", metavar="PREDS.csv|.json", help="write one row per image to this file as they are "
                   "classified (no figure, no per-image lines); the same command continues an interrupted run")
    p.add_argument("--min-confidence", metavar="P|auto", help="answer 'unknown' when the top probability is below P "
                   "(0 < P < 1); auto: the threshold evaluate.py --ood --store-threshold wrote into the model file")
    return p


def check_args(args) -> None:
    if args.topk is not None and args.topk < 1:
        raise ArgumentError(f"--topk {args.topk}: must be at least 1")
    if not 1 <= args.batch_size <= 1024:
        raise ArgumentError(f"--batch-size {args.batch_size}: must be in 1..1024")
    if args.min_confidence is not None and args.min_confidence != "auto":
        try:
            value = float(args.min_confidence)
        except ValueError:
            value = math.nan
        if not 0 < value < 1:
            raise ArgumentError(f"--min-confidence {args.min_confidence}: must be a number in (0, 1) or auto")
    if args.output:
        predictions.check_output(args.output)
        if args.save or args.cam:
            raise ArgumentError(f"--output {args.output}: writes rows, not a figure; drop --save/--cam")
        if os.path.abspath(args.output) in {os.path.abspath(p) for p in [*args.paths, args.weights]}:
            raise ArgumentError(f"--output {args.output}: is one of the inputs")
    if args.save:
        check_figure_name(args.save, [*args.paths, args.weights, args.class_indices])
    if args.cam and args.weights.lower().endswith(".onnx"):
        raise ArgumentError(f"--cam: Grad-CAM looks inside the network; give the PyTorch checkpoint, not {args.weights}")


def min_confidence(option: str | None, classifier) -> float | None:
    """--min-confidence as a number: as given, or the model file's stored threshold (auto)."""
    if option != "auto":
        return None if option is None else float(option)
    stored = classifier.card["min_confidence"]
    if stored is None:
        raise ArgumentError(f"--min-confidence auto: {classifier.card['weights']} stores no threshold; find one with "
                            f"evaluate.py --ood FOLDER --store-threshold (or give a number)")
    return stored


def predict_image(classifier: TorchClassifier, path: str) -> list[float]:
    """One photo through a PyTorch model, step by step, as the tutorial's predict.py does it;
    the probability of each class. (The ONNX model and big folders go through the classifier's
    batched predict_files, which gives the same numbers: tests/test_predict.py.)"""
    import torch

    from alexnet.decoding import pil_to_tensor
    from alexnet.transforms import normalize
    from model import calibrated

    image = images.open_rgb(path)  # upright (the EXIF rotation applied), 8-bit RGB, whatever the file held
    views = classifier.transform(pil_to_tensor(image))  # resize + centre crop: uint8 [3, H, W] (10 crops: --tta)
    batch = views.reshape(-1, *views.shape[-3:])  # the batch dimension: [1, 3, H, W] ([10, 3, H, W] with --tta)
    x = normalize(batch.to(classifier.device), classifier.mean, classifier.std)  # floats, as in training
    model = classifier.model.eval()  # dropout off
    with torch.inference_mode(), torch.autocast(classifier.device.type, enabled=False):  # no gradients; fp32
        logits = model(x)
    probs = torch.softmax(logits.float(), dim=1).mean(dim=0, keepdim=True)  # the 10 crops' average with --tta
    probs = calibrated(probs, classifier.temperature)[0].tolist()  # evaluate.py --calibrate's temperature, if any
    check_finite(probs, path, classifier.card["weights"])
    return probs


def answer(probs: list[float], names: list[str], k: int, threshold: float | None) -> tuple[list[tuple], bool]:
    """(the k most likely (class, probability), whether the image is below --min-confidence)."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])[:k]
    return [(names[i], probs[i]) for i in order], threshold is not None and probs[order[0]] < threshold


def write_predictions(classifier, files: list[str], args, k: int, threshold: float | None) -> int:
    """--output: a row per image, appended batch by batch; rows already in the file are kept."""
    from tqdm import tqdm

    out = predictions.PredictionsFile(args.output, k, threshold)
    todo = [f for f in files if f not in out.done]
    if out.resumed:
        retried = f" ({out.retried} failed before: tried again)" if out.retried else ""
        print(f"{args.output}: {len(out.done)} image(s) already there; classifying the other {len(todo)}{retried}")
    rows, failed = [], 0
    with tqdm(total=len(todo), unit="img", file=sys.stderr, disable=None, dynamic_ncols=True) as bar:
        for path, probs, err in predict_files(classifier, todo, args.batch_size):
            if err:
                failed += 1
                rows.append(predictions.row(path, [], False, err, threshold))
            else:
                rows.append(predictions.row(path, *answer(probs, classifier.names, k, threshold), None, threshold))
            if len(rows) >= args.batch_size:
                out.write(rows)
                bar.update(len(rows))
                rows = []
        out.write(rows)
        bar.update(len(rows))
    out.close()
    print(f"wrote {out.count} rows to {args.output} ({len(todo) - failed} classified now, {failed} unreadable"
          + (f", {len(out.done)} from before)" if out.resumed else ")"))
    return failed


def each_prediction(classifier, files: list[str], batch_size: int):
    """(path, probabilities or None, error or None) per file: one photo at a time through
    ``predict_image`` for a PyTorch model and a batch's worth of photos; batched by the
    classifier for an ONNX model or more photos."""
    if not isinstance(classifier, TorchClassifier) or len(files) > batch_size:
        yield from predict_files(classifier, files, batch_size)
        return
    for path in files:
        try:
            yield path, predict_image(classifier, path), None
        except DataError as e:
            yield path, None, str(e)


def check_figure_name(path: str, inputs: list) -> None:
    """--save: a format matplotlib writes, and never over an input or a file that is no earlier figure."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt and fmt not in formats:
        raise ArgumentError(f"--save {path}: .{fmt} is not a figure format matplotlib writes; use one of "
                            f"{', '.join('.' + f for f in sorted(formats))}")
    inside = [p for p in inputs if p and os.path.isdir(p)]
    for folder in inside:
        if Path(path).resolve().is_relative_to(Path(folder).resolve()):
            raise OutputError(f"{path}: --save is inside the input folder {folder}; pick a place outside it")
    outputs.check_new_output(path, "--save", "the figure", tuple(inputs),
                             lambda held: held == "an empty file" or outputs.written_by_matplotlib(path))


def main(args) -> int:
    check_args(args)
    classifier = load_classifier(args.weights, args.device, args.tta, args.class_indices)
    threshold = min_confidence(args.min_confidence, classifier)
    names = classifier.names
    files, errors, skipped = expand(args.paths)
    if skipped:
        print(skipped)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    k = min(args.topk or len(names), len(names))
    if args.output:
        failed = write_predictions(classifier, files, args, k, threshold)
        return 1 if errors or failed else 0
    shown = []
    for path, probs, err in each_prediction(classifier, files, args.batch_size):
        if err:
            errors.append(err)
            print(f"error: {err}", file=sys.stderr)
            continue
        top, unknown = answer(probs, names, k, threshold)
        label = UNKNOWN if unknown else folders.printable(top[0][0])  # a newline in a class name stays "\n"
        below = f" (top {folders.printable(top[0][0])} {top[0][1]:.3f} < {threshold:g})" if unknown else \
            f" {top[0][1]:.3f}"
        print(f"{folders.printable(path)}: {label}{below}")
        width = max(16, *(folders.width(name) for name, _ in top))
        for name, p in top:
            print(f"    {folders.column(name, width)} {p:.3f}")
        overlay = cam_overlay(*classifier.grad_cam(images.open_rgb(path), names.index(top[0][0]))) \
            if args.cam and len(shown) < MAX_SHOWN else None
        shown.append((path, label, top[0][1], overlay))
    wanted = not args.no_show
    if shown and (args.save or wanted) and not show_figure(shown, args.save, wanted and has_display()) and wanted:
        print(NO_DISPLAY)
    if errors:
        print(f"{len(errors)} of {len(errors) + len(shown)} input(s) failed", file=sys.stderr)
    return 1 if errors else 0


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())

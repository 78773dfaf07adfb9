"""Export a trained AlexNet to ONNX, with what inference needs inside the file, and check it.

    python export.py                                   # runs/best.pth -> runs/best.onnx
    python export.py runs/best.pth -o alexnet.onnx --data data_set/flower_data/val
    python predict.py tulip.jpg --weights runs/best.onnx   # onnxruntime: no torch at all
    python export.py --int8                            # runs/best.pth -> runs/best.int8.onnx, accuracy-guarded

The file holds the validated weights with a dynamic batch axis (input ``images``, N x 3 x
S x S, normalised; output ``logits``), exported by ``torch.onnx.export`` at the opset it
recommends, and in its metadata (key ``alexnet``, JSON) the class names, mean/std, the
evaluation size and resize rule, arch, and the checkpoint's best_acc and epoch, so it
stands alone as our checkpoints do.

Right after writing, the file is checked: onnx's checker, then onnxruntime against
PyTorch on a batch of real images (``--data``: a folder of images, searched recursively)
or generated ones. It prints the largest difference of the probabilities and the top-1
agreement, and fails (exit 1, the file removed) above ``--tolerance`` or below 100%.

--int8: static post-training quantization by onnxruntime (QDQ, int8 weights per output
channel, uint8 activations, MinMax ranges) calibrated on --calibration-images (300) of the
data's train/ (or the folder --calibration gives). Then the fp32 and the int8 model classify
every image of the data's val/ split; when int8's top-1 is more than --max-drop points (1.0)
below fp32's, the export is refused (exit 1, nothing written). The metadata adds the
quantization settings and both top-1 figures. predict.py, evaluate.py and app.py run the
int8 file like any .onnx.
Exit 2: unusable checkpoint, data or options, or onnx / onnxruntime / onnxscript missing.
"""
import alexnet.startup  # noqa: F401  first: Ctrl-C while torch loads is one line, not a traceback

import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

from alexnet import folders, images, outputs
from alexnet.classifier import OnnxClassifier, decoded, load_classifier, predict_files
from alexnet.errors import ArgumentError, CheckpointError, DataError, OneLineParser, UserError, run_main

METADATA_KEY = "alexnet"
INSTALL = "pip install -r requirements.txt (onnx, onnxruntime, onnxscript)"
CHECK_IMAGES = 16
MIN_OPSET = 18  # torch.onnx's exporter writes opset 18 and later; asked for less, it writes 18 without a word
# u8 activations with s8 weights: the pair onnxruntime's x86 int8 kernels (VNNI, AMX) are built for
QUANTIZATION = {"format": "QDQ", "weights": "int8, per output channel", "activations": "uint8", "ranges": "MinMax"}


def get_args_parser() -> OneLineParser:
    p = OneLineParser(description="Export a train.py checkpoint to ONNX and check it against PyTorch.")
    p.add_argument("weights", nargs="?", default="runs/best.pth", help="a train.py checkpoint (default runs/best.pth)")
    p.add_argument("-o", "--output", help="the .onnx file (default: beside the checkpoint, same name)")
    p.add_argument("--class-indices", "--class_indices", dest="class_indices",
                   help="class names for a raw state_dict, as in predict.py")
    p.add_argument("--data", help="check on up to 16 images from this folder (default: generated images)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed difference of a probability")
    p.add_argument("--opset", type=int, help=f"ONNX opset, {MIN_OPSET} or later (default: what torch.onnx.export "
                   f"recommends)")
    p.add_argument("--int8", action="store_true", help="quantize to int8 (default output NAME.int8.onnx), refused "
                   "when top-1 on the data's val/ drops more than --max-drop")
    p.add_argument("--max-drop", type=float, default=1.0, help="--int8: the most top-1 may drop, in points (0-100)")
    p.add_argument("--calibration", metavar="FOLDER", help="--int8: images to calibrate on (default: the data's "
                   "train/, the data being --data or the checkpoint's)")
    p.add_argument("--calibration-images", type=int, default=300, help="--int8: how many, spread over the folder")
    return p


def require_onnx():
    """The ONNX packages, or one line saying how to get them."""
    for name in ("onnx", "onnxruntime", "onnxscript"):  # onnxscript: what torch.onnx.export builds the graph with
        if importlib.util.find_spec(name) is None:
            raise UserError(f"{name}: not installed; export needs it: {INSTALL}")
    import onnx
    import onnxruntime

    return onnx, onnxruntime


def metadata(classifier) -> dict:
    """What predict.py's ONNX path needs to preprocess and name the classes, and the card."""
    card = classifier.card
    return {"format": 1, "classes": classifier.names, "mean": list(classifier.mean), "std": list(classifier.std),
            "eval": {"size": classifier.transform.size, "resize": classifier.transform.resize},
            "arch": card["arch"], "best_acc": card["best_acc"], "epoch": card["epoch"], "data": card["data"],
            "temperature": card["temperature"], "min_confidence": card["min_confidence"],
            "source": str(card["weights"])}


def export(classifier, path: Path, opset: int | None) -> None:
    import torch

    onnx, _ = require_onnx()
    size = classifier.transform.size
    model = classifier.model.float().eval().to("cpu", memory_format=torch.contiguous_format)
    example = torch.zeros(2, 3, size, size)
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"], output_names=["logits"],
                                dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, opset_version=opset,
                                verbose=False)
    proto = program.model_proto
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and written != opset:
        raise ArgumentError(f"--opset {opset}: torch.onnx wrote opset {written} instead; nothing was written")
    set_metadata(proto, metadata(classifier))
    proto.producer_name = "alexnet-reproduced export.py"
    onnx.checker.check_model(proto)
    outputs.write_atomic(path, lambda f: f.write(proto.SerializeToString()))


def set_metadata(proto, info: dict) -> None:
    """``info`` as the model's one "alexnet" metadata entry (JSON), replacing any there."""
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info, ensure_ascii=False)


def check_images(classifier, data_dir: str | None) -> list:
    """Up to 16 preprocessed images (uint8 views): from --data, or generated shapes."""
    if data_dir:
        return [classifier.load(f) for f in folders.spread(folders.images_of(data_dir, "--data", ArgumentError),
                                                           CHECK_IMAGES)]
    import random

    from alexnet import shapes

    rng = random.Random(0)
    pictures = [shapes.draw_shape(shapes.SHAPES[i % 5], 256, rng).resize((256 + 16 * i, 240)) for i in range(8)]
    return [classifier.prepare_pil(p, "generated") for p in pictures]


def int8_folders(args, classifier) -> tuple[list[str], str]:
    """(calibration image files, the val/ split scored), each checked before any work."""
    root = args.data or classifier.card["data"]
    val = os.path.join(root, "val") if root else None
    if not val or not os.path.isdir(val):
        raise DataError(f"--int8: needs labelled val/ images to measure the accuracy drop; {val or 'the checkpoint'} "
                        f"{'not found' if val else 'names no data'}: pass --data DIR (a folder holding val/)")
    files = folders.images_of(args.calibration or os.path.join(root, "train"), "--calibration")
    return folders.spread(files, args.calibration_images), val


def labelled(val: str, names: list[str]) -> tuple[list[str], list[int]]:
    """The val/ split's files and their targets as the model's class indices."""
    classes = folders.find_classes(val)
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise DataError(f"{os.path.join(val, unknown[0])}: the model does not know class {unknown[0]!r}")
    samples, _ = folders.class_samples(val, classes)
    if not samples:
        raise DataError(f"{val}: no images in its class folders")
    return [p for p, _ in samples], [names.index(classes[t]) for _, t in samples]


def top1(onnx_path: Path, files: list[str], targets: list[int]) -> tuple[float, int]:
    """(top-1 of an ONNX model on the files, files it could not read): predict.py's ONNX path."""
    classifier = OnnxClassifier(str(onnx_path), False, None)
    rows = list(predict_files(classifier, files, 32))
    right = sum(p is not None and max(range(len(p)), key=p.__getitem__) == t for (_, p, _), t in zip(rows, targets))
    unread = sum(p is None for _, p, _ in rows)
    return right / max(len(rows) - unread, 1), unread


def quantize(fp32: Path, out: Path, calibration: list[str]) -> None:
    """Static int8 quantization (QUANTIZATION) of ``fp32`` into ``out``, ranges from the images."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader_model = OnnxClassifier(str(fp32), False, None)  # its numpy preprocessing, as at inference

    class Batches(CalibrationDataReader):
        def __init__(self):
            readable = (v for _, v, error in decoded(reader_model, calibration, 64) if error is None)
            self.batches = (images.normalize(np.concatenate(chunk), reader_model.mean, reader_model.std)
                            for chunk in chunks(readable, 32))
            self.seen = 0

        def get_next(self):
            batch = next(self.batches, None)
            if batch is None and not self.seen:
                raise DataError(f"--calibration: none of its {len(calibration)} images could be read")
            self.seen += batch is not None
            return None if batch is None else {"images": batch}

    prepared = out.with_name(out.name + ".pre.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # folds and infers shapes first
    quantize_static(str(prepared), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def chunks(rows, size: int):
    """Lists of ``size`` items (the last one shorter); itertools.batched from Python 3.12."""
    chunk = []
    for r in rows:
        chunk.append(r)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def int8_export(args, classifier, out: Path) -> int:
    """--int8: export fp32 into a scratch folder, check it, quantize it, measure both on val/,
    and write ``out`` only when int8 keeps top-1 within --max-drop."""
    onnx, _ = require_onnx()
    calibration, val = int8_folders(args, classifier)
    files, targets = labelled(val, classifier.names)
    with tempfile.TemporaryDirectory(prefix="export-int8-") as scratch:
        fp32, int8 = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        export(classifier, fp32, args.opset)
        if check(args, classifier, fp32) != 0:
            return 1
        quantize(fp32, int8, calibration)
        (acc_fp32, unread), (acc_int8, _) = top1(fp32, files, targets), top1(int8, files, targets)
        drop = (acc_fp32 - acc_int8) * 100
        print(f"top-1 on {len(files) - unread} images of {val}: fp32 {acc_fp32:.4f}, int8 {acc_int8:.4f} "
              f"(drop {drop:.2f} points; calibrated on {len(calibration)} images)")
        if drop > args.max_drop:
            print(f"error: {out}: not written: int8 loses {drop:.2f} points of top-1 (--max-drop {args.max_drop:g}); "
                  f"calibrate on more or more typical images (--calibration, --calibration-images)", file=sys.stderr)
            return 1
        proto = onnx.load(str(int8))
        set_metadata(proto, metadata(classifier) | {
            "quantization": QUANTIZATION | {"calibration_images": len(calibration)}, "top1_fp32": acc_fp32,
            "top1_int8": acc_int8, "top1_images": len(files) - unread, "top1_data": val})
        outputs.write_atomic(out, lambda f: f.write(proto.SerializeToString()))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, int8)")
    return 0


def compare(classifier, onnx_path: Path, views: list) -> tuple[float, float]:
    """(largest |p_onnx - p_torch| over every probability, share of images with the same top-1)."""
    import numpy as np

    torch_probs = np.asarray(classifier.probabilities(views))
    onnx_probs = np.asarray(OnnxClassifier(str(onnx_path), classifier.transform.tta, None).probabilities(
        [v.numpy() for v in views]))  # the same uint8 views: this compares the models, not the preprocessing
    return float(np.abs(onnx_probs - torch_probs).max()), float((onnx_probs.argmax(1) == torch_probs.argmax(1)).mean())


def check(args, classifier, path: Path) -> int:
    """onnx's checker, then onnxruntime against PyTorch: 0, or 1 with the reason printed."""
    onnx, _ = require_onnx()
    onnx.checker.check_model(str(path))
    views = check_images(classifier, args.data)
    worst, agree = compare(classifier, path, views)
    print(f"onnx checker: passed; onnxruntime vs PyTorch on {len(views)} {'images' if args.data else 'generated images'}"
          f": largest probability difference {worst:.2e}, top-1 agreement {agree:.0%}")
    if worst <= args.tolerance and agree == 1:
        return 0
    print(f"error: onnxruntime disagrees with PyTorch (difference {worst:.2e} > {args.tolerance:g} "
          f"or top-1 agreement {agree:.0%} < 100%); nothing was written", file=sys.stderr)
    return 1


def main(args) -> int:
    if not 0 < args.tolerance < 1:
        raise ArgumentError(f"--tolerance {args.tolerance}: must be in (0, 1)")
    if not 0 <= args.max_drop <= 100:
        raise ArgumentError(f"--max-drop {args.max_drop}: must be in 0..100 (points of top-1)")
    if not 1 <= args.calibration_images <= 100_000:
        raise ArgumentError(f"--calibration-images {args.calibration_images}: must be in 1..100000")
    onnx, _ = require_onnx()
    newest = onnx.defs.onnx_opset_version()
    if args.opset is not None and not MIN_OPSET <= args.opset <= newest:
        raise ArgumentError(f"--opset {args.opset}: must be in {MIN_OPSET}..{newest} (torch.onnx writes opset "
                            f"{MIN_OPSET} and later; the installed onnx knows up to {newest})")
    weights = Path(args.weights)
    out = Path(args.output) if args.output else weights.with_suffix(".int8.onnx" if args.int8 else ".onnx")
    if weights.suffix.lower() == ".onnx":
        raise CheckpointError(f"{args.weights}: already an ONNX file; export reads a train.py checkpoint (.pth)")
    if out.suffix.lower() != ".onnx":
        raise ArgumentError(f"--output {out}: an ONNX model's name must end in .onnx (predict.py tells the formats "
                            f"apart by it)")
    outputs.check_new_output(out, "--output", "the ONNX model", (args.weights, args.class_indices),
                             lambda held: held in ("an ONNX model", "an empty file"))
    classifier = load_classifier(args.weights, "cpu", False, args.class_indices)
    if args.int8:
        return int8_export(args, classifier, out)
    with tempfile.TemporaryDirectory(prefix="export-", dir=out.parent) as scratch:
        written = Path(scratch) / out.name
        export(classifier, written, args.opset)
        print(f"wrote {out} ({written.stat().st_size / 2**20:.1f} MiB): {classifier.card['arch']} AlexNet, "
              f"{len(classifier.names)} classes, input N x 3 x {classifier.transform.size} x "
              f"{classifier.transform.size}")
        if check(args, classifier, written) != 0:
            return 1
        outputs.move_atomic(written, out)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())

"""Export a trained AlexNet to ONNX, with what inference needs inside the file, and check it.

    python export.py                                   # runs/best.pth -> runs/best.onnx
    python export.py runs/best.pth -o alexnet.onnx --data data_set/flower_data/val
    python predict.py tulip.jpg --weights runs/best.onnx   # onnxruntime: no torch at all

The file holds the validated weights with a dynamic batch axis (input ``images``, N x 3 x
S x S, normalised; output ``logits``), exported by ``torch.onnx.export`` at the opset it
recommends, and in its metadata (key ``alexnet``, JSON) the class names, mean/std, the
evaluation size and resize rule, arch, and the checkpoint's best_acc and epoch, so it
stands alone as our checkpoints do.

Right after writing, the file is checked: onnx's checker, then onnxruntime against
PyTorch on a batch of real images (``--data``: a folder of images, searched recursively)
or generated ones. It prints the largest difference of the probabilities and the top-1
agreement, and fails (exit 1, the file removed) above ``--tolerance`` or below 100%.
Exit 2: unusable checkpoint or options, or onnx / onnxruntime / onnxscript missing.
"""
from errors import quiet_startup_interrupt

if __name__ == "__main__":
    quiet_startup_interrupt()  # Ctrl-C while torch loads: one line, not a traceback

import importlib.util
import json
import os
import sys
from pathlib import Path

import folders
import outputs
from errors import ArgumentError, CheckpointError, OneLineParser, UserError, run_main

METADATA_KEY = "alexnet"
INSTALL = "pip install -r requirements.txt (onnx, onnxruntime, onnxscript)"
CHECK_IMAGES = 16


def get_args_parser() -> OneLineParser:
    p = OneLineParser(description="Export a train.py checkpoint to ONNX and check it against PyTorch.")
    p.add_argument("weights", nargs="?", default="runs/best.pth", help="a train.py checkpoint (default runs/best.pth)")
    p.add_argument("-o", "--output", help="the .onnx file (default: beside the checkpoint, same name)")
    p.add_argument("--class-indices", "--class_indices", dest="class_indices",
                   help="class names for a raw state_dict, as in predict.py")
    p.add_argument("--data", help="check on up to 16 images from this folder (default: generated images)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed difference of a probability")
    p.add_argument("--opset", type=int, help="ONNX opset (default: what torch.onnx.export recommends)")
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
            "temperature": card["temperature"], "source": str(card["weights"])}


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
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata(classifier), ensure_ascii=False)
    proto.producer_name = "alexnet-reproduced export.py"
    onnx.checker.check_model(proto)
    outputs.write_atomic(path, lambda f: f.write(proto.SerializeToString()))


def check_images(classifier, data_dir: str | None) -> list:
    """Up to 16 preprocessed images (uint8 views): from --data, or generated shapes."""
    if data_dir:
        if not os.path.isdir(data_dir):
            raise ArgumentError(f"--data {data_dir}: folder not found")
        files = folders.list_images(data_dir).files
        if not files:
            raise ArgumentError(f"--data {data_dir}: no images inside")
        step = max(1, len(files) // CHECK_IMAGES)
        return [classifier.load(f) for f in files[::step][:CHECK_IMAGES]]
    import random

    import shapes

    rng = random.Random(0)
    pictures = [shapes.draw_shape(shapes.SHAPES[i % 5], 256, rng).resize((256 + 16 * i, 240)) for i in range(8)]
    return [classifier.prepare_pil(p, "generated") for p in pictures]


def compare(classifier, onnx_path: Path, views: list) -> tuple[float, float]:
    """(largest |p_onnx - p_torch| over every probability, share of images with the same top-1)."""
    import numpy as np

    import predict

    torch_probs = np.asarray(classifier.probabilities(views))
    onnx_probs = np.asarray(predict.OnnxClassifier(str(onnx_path), classifier.transform.tta, None).probabilities(
        [v.numpy() for v in views]))  # the same uint8 views: this compares the models, not the preprocessing
    return float(np.abs(onnx_probs - torch_probs).max()), float((onnx_probs.argmax(1) == torch_probs.argmax(1)).mean())


def main(args) -> int:
    if not 0 < args.tolerance < 1:
        raise ArgumentError(f"--tolerance {args.tolerance}: must be in (0, 1)")
    require_onnx()
    import predict

    out = Path(args.output) if args.output else Path(args.weights).with_suffix(".onnx")
    if Path(args.weights).suffix.lower() == ".onnx":
        raise CheckpointError(f"{args.weights}: already an ONNX file; export reads a train.py checkpoint (.pth)")
    if out.suffix.lower() != ".onnx":
        raise ArgumentError(f"--output {out}: an ONNX model's name must end in .onnx (predict.py tells the formats "
                            f"apart by it)")
    outputs.check_new_output(out, "--output", "the ONNX model", (args.weights, args.class_indices),
                             lambda held: held in ("an ONNX model", "an empty file"))
    classifier = predict.load_classifier(args.weights, "cpu", False, args.class_indices)
    export(classifier, out, args.opset)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB): {classifier.card['arch']} AlexNet, "
          f"{len(classifier.names)} classes, input N x 3 x {classifier.transform.size} x {classifier.transform.size}")
    onnx, _ = require_onnx()
    onnx.checker.check_model(str(out))
    views = check_images(classifier, args.data)
    worst, agree = compare(classifier, out, views)
    print(f"onnx checker: passed; onnxruntime vs PyTorch on {len(views)} {'images' if args.data else 'generated images'}"
          f": largest probability difference {worst:.2e}, top-1 agreement {agree:.0%}")
    if worst <= args.tolerance and agree == 1:
        return 0
    out.unlink()
    print(f"error: {out}: onnxruntime disagrees with PyTorch (difference {worst:.2e} > {args.tolerance:g} "
          f"or top-1 agreement {agree:.0%} < 100%); the file was removed", file=sys.stderr)
    return 1


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())

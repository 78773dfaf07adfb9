"""A trained model ready to classify image files, whatever its format: ``load_classifier``
gives a ``TorchClassifier`` (a train.py checkpoint or a raw state_dict such as the tutorial's
AlexNet.pth) or an ``OnnxClassifier`` (export.py's file, run by onnxruntime without torch).
Both read an image the same way and give the same probabilities (to 1e-5);
``predict_files`` is the prediction path of every front end: predict.py, evaluate.py's
per-image report and app.py's web page.

Only torch and Pillow are imported (no torchvision), and torch only by the PyTorch path, so
a one-image prediction starts fast."""
import json
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from alexnet import checkpoint, folders, images
from alexnet.errors import ArgumentError, CheckpointError, DataError, UserError

DEFAULT_WEIGHTS = "runs/best.pth"  # where train.py leaves its best model
MAX_CLASS_FILE_BYTES = 16 * 2**20  # 100,000 class names fit in 4 MiB
MAX_ONNX_BYTES = 4 * 2**30  # the paper-width AlexNet is 0.24 GB
DECODE_THREADS = min(8, os.cpu_count() or 1)


def read_class_indices(path: str) -> list[str]:
    if not os.path.lexists(path):
        raise CheckpointError(f"{path}: class index file not found (pass --class-indices)")
    folders.check_file(path, "class index", CheckpointError, MAX_CLASS_FILE_BYTES)
    try:
        mapping = json.loads(Path(path).read_text(encoding="utf-8"))
        names = [mapping[str(i)] for i in range(len(mapping))]
        if not all(isinstance(n, str) for n in names):
            raise TypeError
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
    except (KeyError, AttributeError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f'{path}: expected {{"0": "class name", "1": ...}} with keys 0..n-1') from None
    return names


def class_names(own: list[str] | None, num_classes: int, class_indices: str | None, weights: str) -> list[str]:
    """The model file's own class names; a class_indices.json must agree with them. A raw
    state_dict has none: then the file given, or ./class_indices.json as in the tutorial."""
    path = class_indices or (None if own else "class_indices.json")
    names = read_class_indices(path) if path else list(own)
    if len(names) != num_classes:
        raise CheckpointError(f"{path or weights}: lists {len(names)} classes, but {weights} has {num_classes} outputs")
    if own and names != list(own):
        raise CheckpointError(f"{path}: classes {names} disagree with {weights}: {list(own)}")
    return names


class TorchClassifier:
    """A train.py checkpoint or a raw state_dict, run by PyTorch on ``device``."""

    def __init__(self, weights: str, device: str, tta: bool, class_indices: str | None):
        import torch

        from alexnet import transforms
        from alexnet.checkpoint import from_checkpoint, load_checkpoint
        from alexnet.machine import pick_device

        self.torch = torch
        ckpt = load_checkpoint(weights, mmap=True)
        self.names = class_names(ckpt.get("classes"), int(ckpt["num_classes"]), class_indices, weights)
        self.device = pick_device(device)
        self.model = from_checkpoint(ckpt, weights).to(self.device, memory_format=torch.channels_last).eval()
        ev = ckpt.get("eval", {"size": 224, "resize": 0})  # a raw state_dict: the tutorial's Resize((224, 224))
        self.transform = transforms.EvalTransform(ev["size"], ev["resize"], tta)
        self.mean, self.std = ckpt.get("mean", images.TUTORIAL_MEAN), ckpt.get("std", images.TUTORIAL_STD)
        self.temperature = ckpt["temperature"]
        config = ckpt.get("config") or {}
        self.card = model_card(weights, self.names, {**ckpt, "data": config.get("data"), "tta": config.get("tta")})

    def load(self, path: str):
        """One image file, preprocessed (uint8 views); DataError names the file if unreadable."""
        from alexnet.decoding import decode_pillow

        return self.transform(decode_pillow(path))

    def prepare_pil(self, img, name: str):
        """An image already open in Pillow (app.py's uploads), preprocessed like ``load``."""
        from alexnet.decoding import rgb_from_pil

        return self.transform(rgb_from_pil(img, name))

    def probabilities(self, batch: list) -> list[list[float]]:
        from model import probabilities

        from alexnet.transforms import normalize

        x = normalize(self.torch.stack(batch).to(self.device), self.mean, self.std)
        # fp32 on every path (and whatever autocast a caller has on): the probabilities
        # predict.py, evaluate.py, app.py and the ONNX model report agree to 1e-5
        with self.torch.inference_mode(), self.torch.autocast(self.device.type, enabled=False):
            return probabilities(self.model, x, self.transform.views, self.temperature).cpu().tolist()

    def grad_cam(self, image, class_index: int) -> tuple:
        """(the centre view the model sees, uint8 H x W x 3; its Grad-CAM for the class,
        H x W in [0, 1]) of an upright RGB Pillow image."""
        from model import grad_cam

        from alexnet.decoding import pil_to_tensor
        from alexnet.transforms import EvalTransform, normalize

        view = EvalTransform(self.transform.size, self.transform.resize)(pil_to_tensor(image))
        x = normalize(view[None].to(self.device), self.mean, self.std)
        heat = grad_cam(self.model, x, self.torch.tensor([class_index]))[0]
        return view.permute(1, 2, 0).numpy(), heat.cpu().numpy()


def model_card(weights: str, names: list[str], fields: dict, int8: dict | None = None) -> dict:
    """What a user wants to know about a model file, whatever its format (a checkpoint's or
    an ONNX file's ``fields``): shown by app.py, written by export.py."""
    card = {key: fields.get(key) for key in ("arch", "best_acc", "epoch", "data", "eval", "temperature",
                                              "min_confidence")}
    return {"weights": str(weights), "classes": names, **card, "tta": bool(fields.get("tta")), "int8": int8}


class OnnxClassifier:
    """An ONNX file from export.py, run by onnxruntime on the CPU: Pillow and numpy do the
    preprocessing (images.EvalViews), and torch is never imported."""

    def __init__(self, weights: str, tta: bool, class_indices: str | None):
        try:
            import numpy as np
            import onnxruntime
        except ImportError as e:
            raise UserError(f"{e.name}: not installed; .onnx models need it: pip install -r requirements.txt") from None
        self.np = np
        folders.check_file(weights, "ONNX model", CheckpointError, MAX_ONNX_BYTES)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors reach the user as one line, not as onnxruntime's log
        try:
            self.session = onnxruntime.InferenceSession(weights, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own, unexported exception types
            raise CheckpointError(f"{weights}: not a readable ONNX model ({str(e).splitlines()[0][:160]})") from None
        num_classes, side = onnx_signature(self.session, weights)
        info = onnx_metadata(self.session, weights, num_classes)
        self.names = class_names(info.get("classes"), num_classes, class_indices, weights)
        ev = info.get("eval", {"size": side or 224, "resize": 0})
        if side is not None and ev["size"] != side:
            raise CheckpointError(f"{weights} (metadata): field 'eval.size' is {ev['size']}, but the graph takes "
                                  f"{side} x {side} images; the file was changed after export.py wrote it")
        self.transform = images.EvalViews(ev["size"], ev["resize"], tta)
        self.mean, self.std = info.get("mean", images.TUTORIAL_MEAN), info.get("std", images.TUTORIAL_STD)
        self.temperature = info.get("temperature", 1.0)  # exports before calibration existed: uncalibrated
        int8 = {"fp32": info["top1_fp32"], "int8": info["top1_int8"]} if "quantization" in info else None
        self.card = model_card(weights, self.names, {**info, "eval": ev, "temperature": self.temperature, "tta": False},
                               int8)

    def load(self, path: str):
        return self.transform(images.open_rgb(path))

    def prepare_pil(self, img, name: str):
        return self.transform(images.upright_rgb(img, name))

    def probabilities(self, batch: list) -> list[list[float]]:
        np = self.np
        views = np.concatenate([v.reshape(-1, *v.shape[-3:]) for v in batch])
        logits = self.session.run(None, {self.session.get_inputs()[0].name: images.normalize(views, self.mean,
                                                                                              self.std)})[0]
        probs = softmax(np, logits).reshape(len(batch), -1, logits.shape[1]).mean(axis=1)
        if self.temperature != 1.0:  # model.calibrated, in numpy
            probs = softmax(np, np.log(np.clip(probs, 1e-12, None)) / self.temperature)
        return probs.tolist()


def softmax(np, logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def onnx_signature(session, weights: str) -> tuple[int, int | None]:
    """(classes, input side or None if dynamic) of an image classifier's graph: one input
    N x 3 x S x S, one output N x classes; any other model is one line."""
    inputs, outputs_ = session.get_inputs(), session.get_outputs()
    shape_in = inputs[0].shape if len(inputs) == 1 else None
    shape_out = outputs_[0].shape if outputs_ else None
    fits = (shape_in is not None and len(shape_in) == 4 and shape_in[1] == 3 and shape_in[2] == shape_in[3]
            and shape_out is not None and len(shape_out) == 2 and isinstance(shape_out[1], int) and shape_out[1] >= 1
            and "float" in inputs[0].type)
    if not fits:
        raise CheckpointError(f"{weights}: not an image classifier export (inputs "
                              f"{[(i.name, i.shape, i.type) for i in inputs]}, output shape {shape_out}); "
                              f"export.py writes one input N x 3 x S x S and one output N x classes")
    side = shape_in[3] if isinstance(shape_in[3], int) else None
    return shape_out[1], side


def onnx_metadata(session, weights: str, num_classes: int) -> dict:
    """export.py's 'alexnet' metadata (JSON), every field predict.py uses checked by type."""
    meta = session.get_modelmeta().custom_metadata_map.get("alexnet")
    try:
        info = json.loads(meta) if meta else {}
    except json.JSONDecodeError:
        raise CheckpointError(f"{weights}: its 'alexnet' metadata is not valid JSON") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{weights}: its 'alexnet' metadata is not a JSON object")
    fields = {k: info[k] for k in ("classes", "eval", "mean", "std", "best_acc", "epoch", "temperature",
                                   "min_confidence", "top1_fp32", "top1_int8") if k in info}
    if "quantization" in info and not ("top1_fp32" in info and "top1_int8" in info):
        raise CheckpointError(f"{weights} (metadata): an int8 export without its top-1 figures (top1_fp32, top1_int8)")
    checkpoint.check_fields({"num_classes": num_classes, **fields}, f"{weights} (metadata)")
    return info


def load_classifier(weights: str, device: str = "cpu", tta: bool = False, class_indices: str | None = None):
    """The model behind --weights, ready to classify: a .onnx file through onnxruntime,
    anything else as a PyTorch checkpoint."""
    if os.path.isdir(weights):
        raise CheckpointError(f"{weights}: is a folder, not a model file")
    if weights.lower().endswith(".onnx"):
        if device not in ("cpu", "auto"):
            raise ArgumentError(f"--device {device}: .onnx models run on the CPU here (onnxruntime); drop --device")
        return OnnxClassifier(weights, tta, class_indices)
    return TorchClassifier(weights, device, tta, class_indices)


def expand(paths: list[str]) -> tuple[list[str], list[str], str]:
    """Files as given, folders as their image files (sorted, recursive), each photo once
    however often it is named; plus errors, and a line saying which files the folders held
    that are not images (and how many were named twice)."""
    files, errors, listing, seen = [], [], folders.Listing(), {}
    for p in paths:
        if os.path.isdir(p):
            found = folders.list_images(p, seen)
            files += found.files
            listing.add(found)
            if not found.files:
                errors.append(f"{p}: folder has no images ({', '.join(folders.IMG_EXTENSIONS)})")
        elif os.path.exists(p):
            st = os.stat(p)
            key = (st.st_dev, st.st_ino)
            if key in seen:  # the same photo given twice, or again inside a folder given: one row
                listing.duplicates += 1
            else:
                seen[key] = p
                files.append(p)
        else:
            errors.append(f"{p}: no such file or folder")
    return files, errors, folders.describe_skipped(listing)


def checked_probabilities(classifier, views: list, names: list[str]) -> list[list[float]]:
    """The classifier's probabilities, or a CheckpointError if any is NaN or infinite."""
    probs = classifier.probabilities(views)
    for name, p in zip(names, probs):
        check_finite(p, name, classifier.card["weights"])
    return probs


def check_finite(probs: list[float], name: str, weights: str) -> None:
    """Broken weights must never print as a confident answer: NaN or infinite probabilities
    are a CheckpointError naming the model file."""
    if not all(math.isfinite(v) for v in probs):
        raise CheckpointError(f"{weights}: the model gives NaN or infinite probabilities for {name}: its weights "
                              f"are broken")


def decoded(classifier, files: list[str], ahead: int) -> Iterator[tuple[str, object, str | None]]:
    """(path, preprocessed views or None, error or None) in the files' order, decoded by a pool
    of threads up to ``ahead`` files before the model needs them. Threads rather than
    DataLoader workers: the ONNX path runs without torch, and Pillow's decoders and the resize
    release the GIL, so threads decode in parallel and start instantly."""
    if len(files) <= 1:  # one photo: no pool to start
        yield from (finish(classifier, path, None) for path in files)
        return
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        pending: deque = deque()
        try:
            for path in files:
                pending.append((path, pool.submit(classifier.load, path)))
                if len(pending) > ahead:
                    yield finish(classifier, *pending.popleft())
            while pending:
                yield finish(classifier, *pending.popleft())
        finally:
            for _, future in pending:
                future.cancel()


def finish(classifier, path: str, future) -> tuple[str, object, str | None]:
    try:
        return path, future.result() if future else classifier.load(path), None
    except DataError as e:
        return path, None, str(e)


def predict_files(classifier, files: list[str],
                  batch_size: int) -> Iterator[tuple[str, list[float] | None, str | None]]:
    """(path, probabilities or None, error or None) for each file, batching readable images."""
    batch: list[tuple[str, object]] = []

    def flush():
        probs = checked_probabilities(classifier, [x for _, x in batch], [path for path, _ in batch])
        out = [(path, p, None) for (path, _), p in zip(batch, probs)]
        batch.clear()
        return out

    for path, views, error in decoded(classifier, files, 2 * batch_size):
        if error:
            yield path, None, error
        else:
            batch.append((path, views))
        if len(batch) == batch_size:
            yield from flush()
    if batch:
        yield from flush()

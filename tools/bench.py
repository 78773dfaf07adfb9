"""Measure the tutorial's pipeline and ours side by side, on the same images, model and batch.

    python tools/bench.py                                            # generated 320-500 px JPEG photos
    python tools/bench.py --data /tmp/flowers --repeats 3            # any folder with train/ and val/
    python tools/bench.py --device cuda --json                       # on a GPU, machine-readable
    python tools/bench.py --compile                                  # also the model step under torch.compile
    python tools/bench.py --formats runs/best.pth --data DIR         # only the deployment table, per model format

Prints, as medians over --repeats:
  1. the tutorial-equivalent path (PIL ImageFolder + Compose transforms, fp32, NCHW, its
     worker count, validation at batch 4): training and validation images/s;
  2. the default path (train.py itself: decode-once cache, channels_last, fused optimizer,
     the precision train.py picks, validation under inference_mode at 32 on a CPU, 256 on
     a GPU): the same two figures;
  3. the model step alone on a synthetic batch, the tutorial's (fp32, NCHW, Adam) and
     train.py's own (its precision and optimizer step with the default recipe's settings),
     and a 2048^3 matmul's GFLOP/s in fp32 and bf16, so the training rate can be read as a
     fraction of the model step's and of what the machine's matmul peak allows;
  4. on a CPU: predict.py on one image, whole process, with the PyTorch checkpoint and
     with its ONNX export, against the tutorial's predict.py; and batched inference,
     PyTorch against onnxruntime.

--formats WEIGHTS prints one table instead, a row per format of that trained model
(PyTorch fp32, PyTorch bf16 where the CPU has bf16 instructions, ONNX fp32, ONNX int8 from
export.py --int8's quantization): top-1 on --data's val/ images (the same preprocessed
tensors for every format), batch throughput on them, predict.py's one-image whole-process
latency and the file's size. Every report starts with the CPU's model and its int8/bf16
instructions.
"""
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project folder: its scripts and alexnet/
import alexnet.startup  # noqa: E402, F401  before torch: Ctrl-C while it loads is one line, not a traceback

import torch  # noqa: E402
from torch import nn  # noqa: E402

import train  # noqa: E402
from alexnet import datasets, decoding, folders, settings, shapes, transforms  # noqa: E402
from alexnet.classifier import decoded, load_classifier  # noqa: E402
from alexnet.errors import ArgumentError, OneLineParser, run_main  # noqa: E402
from alexnet.loaders import train_cache_side  # noqa: E402
from alexnet.machine import (Machine, cpu_has_bf16, cpu_summary, keep_freed_memory, pick_device,  # noqa: E402
                             pick_precision)
from alexnet.trainer import Trainer, build_optimizer  # noqa: E402
from model import AlexNet  # noqa: E402

HERE = Path(__file__).resolve().parents[1]  # the project folder, where the scripts are

# The tutorial's predict.py, as published (comments translated), plus the model it imports.
TUTORIAL_PREDICT = '''
import os
import json
import argparse
import torch
from PIL import Image
from torchvision import transforms
import matplotlib.pyplot as plt
from model import AlexNet

def parse_args():
    parser = argparse.ArgumentParser(description="predict")
    parser.add_argument("img_path")
    parser.add_argument("--model_path", default="./AlexNet.pth")
    parser.add_argument("--class_indices", default="./class_indices.json")
    return parser.parse_args()

def load_image(img_path, transform):
    img = Image.open(img_path)
    img = transform(img)
    return torch.unsqueeze(img, dim=0)

def load_model(model_path, device, num_classes=5):
    model = AlexNet(num_classes=num_classes).to(device)
    model.load_state_dict(torch.load(model_path))
    return model

def predict_image(img, model, class_indict, device):
    model.eval()
    with torch.no_grad():
        output = torch.squeeze(model(img.to(device))).cpu()
        probabilities = torch.softmax(output, dim=0)
        predicted_class = torch.argmax(probabilities).numpy()
    return predicted_class, probabilities

def main():
    args = parse_args()
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    transform = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                                    transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    img = load_image(args.img_path, transform)
    with open(args.class_indices, "r") as f:
        class_indict = json.load(f)
    model = load_model(args.model_path, device)
    predicted_class, probabilities = predict_image(img, model, class_indict, device)
    print("class: {} prob: {:.3}".format(class_indict[str(predicted_class)], probabilities[predicted_class].numpy()))
    for i in range(len(probabilities)):
        print("class: {:10} prob: {:.3}".format(class_indict[str(i)], probabilities[i].numpy()))
    plt.imshow(Image.open(args.img_path))
    plt.title("{}".format(class_indict[str(predicted_class)]))
    plt.show()

if __name__ == '__main__':
    main()
'''


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- 1. the tutorial's pipeline
def tutorial_loaders(root: Path, batch_size: int):
    from torchvision import datasets, transforms

    norm = transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    train_tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), norm])
    val_tf = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(), norm])
    nw = min([os.cpu_count(), batch_size if batch_size > 1 else 0, 8])
    # regular files only: ImageFolder would open a named pipe called x.jpg and wait for ever
    regular = lambda path: folders.is_image_file(path) and os.path.isfile(path)  # noqa: E731
    train_ds = datasets.ImageFolder(str(root / "train"), transform=train_tf, is_valid_file=regular)
    val_ds = datasets.ImageFolder(str(root / "val"), transform=val_tf, is_valid_file=regular)
    return (torch.utils.data.DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=nw),
            torch.utils.data.DataLoader(val_ds, batch_size=4, shuffle=False, num_workers=nw), nw)


def tutorial_epochs(root: Path, batch_size: int, repeats: int, device: torch.device) -> tuple[list, list, int]:
    """The tutorial's train_one_epoch and validate loops, timed over whole epochs."""
    train_loader, val_loader, nw = tutorial_loaders(root, batch_size)
    net = AlexNet(num_classes=len(train_loader.dataset.classes), init_weights=True).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.0002)
    loss_function = nn.CrossEntropyLoss()
    train_rates, val_rates = [], []
    for _ in range(repeats):
        net.train()
        t0 = time.perf_counter()
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = loss_function(net(images.to(device)), labels.to(device))
            loss.backward()
            optimizer.step()
            loss.item()
        sync(device)
        train_rates.append(len(train_loader.dataset) / (time.perf_counter() - t0))
        net.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            for images, labels in val_loader:
                torch.eq(torch.max(net(images.to(device)), dim=1)[1], labels.to(device)).sum().item()
        val_rates.append(len(val_loader.dataset) / (time.perf_counter() - t0))
    return train_rates, val_rates, nw


# ---------------------------------------------------------------- 2. our default path
def default_epochs(root: Path, batch_size: int, repeats: int, device: str, out: Path, *extra: str) -> dict:
    """train.py's own main(), one warm-up epoch plus --repeats timed ones."""
    args = train.get_args_parser().parse_args([
        "--data", str(root), "--output-dir", str(out), "--batch-size", str(batch_size), "--device", device,
        "--epochs", str(repeats + 1), "--quiet", "--overwrite", *extra])
    t0 = time.perf_counter()
    summary = train.main(args)
    rows = summary["history"][1:]
    return {"train": [r["train_images_per_s"] for r in rows], "val": [r["val_images_per_s"] for r in rows],
            "startup_s": time.perf_counter() - t0 - sum(r["seconds"] for r in summary["history"]),
            "precision": pick_precision("auto", pick_device(device, 0))}


def default_config() -> settings.Config:
    """train.py's settings when it is given no options: the default recipe."""
    return settings.resolve_config(train.get_args_parser().parse_args([]))[0]


def cached_training_images(root: Path, cfg: settings.Config) -> datasets.CachedImageFolder:
    """root/train decoded into memory as train.py caches it, with its training augmentation."""
    augment = transforms.train_augment(cfg.img_size, cfg.crop_scale, cfg.aug)
    return datasets.CachedImageFolder(str(root / "train"), datasets.CachePolicy(None, 2**40, "skip", quiet=True),
                                      pre_transform=transforms.ShortSide(train_cache_side(cfg)), transform=augment,
                                      log=lambda line: None)


def batch_building_rates(root: Path, batch_size: int, device: torch.device, batches: int) -> dict[str, float]:
    """Images/s of making training batches alone (crop + flip of cached images, no model):
    per image in the main process, as a DataLoader does it, and device_data's batched crop."""
    from alexnet import device_data

    cfg = default_config()
    cached = cached_training_images(root, cfg)
    per_image = torch.utils.data.DataLoader(cached, batch_size, shuffle=True)
    resident = device_data.ResidentImages(cached.images, cached.targets, device)
    batched = device_data.DeviceBatches(cached, resident, batch_size, cfg.crop_scale, cfg.img_size, drop_last=False)
    def passes(loader):  # every batch made afresh (itertools.cycle would replay stored ones)
        while True:
            yield from loader

    rates = {}
    for name, loader in (("per_image", per_image), ("batched", batched)):
        seen, t0 = 0, time.perf_counter()
        for images, _ in itertools.islice(passes(loader), batches):
            images.to(device).float()  # where the model would take them
            seen += len(images)
        sync(device)
        rates[name] = seen / (time.perf_counter() - t0)
    return rates


def decode_rates(root: Path, repeats: int, count: int = 300) -> dict[str, float]:
    """Images/s of decoding up to ``count`` training JPEGs to uint8 RGB, one image at a time,
    interleaved, medians over ``repeats`` passes: Pillow (predict.py's path and the fallback,
    with its checks), torchvision.io's decoder (deprecated in torchvision 0.29), TorchCodec's,
    and train.py's decoding.decode_rgb (Pillow reads the header, TorchCodec decodes)."""
    import warnings



    files = [f for f in folders.list_images(str(root / "train")).files if f.lower().endswith((".jpg", ".jpeg"))]
    files = files[::max(1, len(files) // count)][:count]
    decoders = {"pillow": decoding.decode_pillow}
    try:
        from torchvision.io import ImageReadMode, decode_image, read_file
        decoders["torchvision.io"] = lambda p: decode_image(read_file(p), mode=ImageReadMode.RGB,
                                                            apply_exif_orientation=True)
    except ImportError:
        pass
    codec = decoding.codec_decoders().get("JPEG")
    if codec:
        decoders["torchcodec"] = lambda p: codec(Path(p).read_bytes(), mode="RGB")
    decoders["train.py decode_rgb"] = decoding.decode_rgb
    times: dict[str, list[float]] = {name: [] for name in decoders}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision.io's, measured on purpose
        for _ in range(repeats):
            for name, decode in decoders.items():
                t0 = time.perf_counter()
                for path in files:
                    decode(path)
                times[name].append(time.perf_counter() - t0)
    return {name: len(files) / statistics.median(t) for name, t in times.items()}


# ---------------------------------------------------------------- 3. the machine
def train_step(net: nn.Module, device: torch.device, precision: str, compile: bool = False) -> Callable:
    """train.py's own training step (train.train_step) on (uint8 images, targets) for ``net``
    (channels_last), with the default recipe's settings: its fused AdamW, label smoothing and
    gradient clipping, under its precision's autocast."""
    cfg = default_config()
    trainer = Trainer(model=net, step_model=torch.compile(net) if compile else net,
                      optimizer=build_optimizer(cfg, net),
                      scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
                      criterion=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing), plateau=None,
                      ema=None, lighting_basis=None, lighting=None, mix=None)
    machine = Machine(device, precision)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        train.train_step(cfg, machine, trainer, x, y)[2].item()

    return step


def model_step_rate(batch_size: int, precision: str, ours: bool, device: torch.device, steps: int,
                    compile: bool = False) -> float:
    """One training step on a synthetic batch: the tutorial's (NCHW, Adam, plain cross-entropy),
    or train.py's own (``train_step``), optionally through torch.compile (its compilation
    happens in the untimed first steps)."""
    net = AlexNet(num_classes=5, init_weights=True).to(device)
    x = torch.randn(batch_size, 3, 224, 224, device=device)
    y = torch.randint(0, 5, (batch_size,), device=device)
    if ours:  # train.py's step normalises the uint8 pixels its loader gives, on the device
        net = net.to(memory_format=torch.channels_last)
        x = torch.randint(0, 256, x.shape, dtype=torch.uint8, device=device)
        step = train_step(net, device, precision, compile)
    else:
        optimizer = torch.optim.Adam(net.parameters(), lr=2e-4)

        def step(images: torch.Tensor, targets: torch.Tensor) -> None:
            loss = nn.functional.cross_entropy(net(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        step(x, y)
        sync(device)
        if i >= 2:  # the first steps pick kernels
            times.append(time.perf_counter() - t0)
    return batch_size / statistics.median(times)


def matmul_gflops(dtype: torch.dtype, device: torch.device, n: int = 2048, reps: int = 7) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def bf16_supported(device: torch.device) -> bool:
    """Whether the hardware has bf16 matmuls; emulated ones on an AVX2-only CPU run at
    under 1 GFLOP/s and would take minutes to time."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def train_flops_per_image() -> float:
    """Forward + backward FLOPs of one 224 px image, counted by PyTorch itself."""
    from torch.utils.flop_counter import FlopCounterMode

    net = AlexNet(num_classes=5)
    x = torch.randn(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter:
        net(x).sum().backward()
    return counter.get_total_flops()


# ---------------------------------------------------------------- 4. predict.py
def predict_walls(image: Path, repeats: int, work: Path) -> dict[str, list[float]]:
    """Wall time of a whole `python predict.py img --no-show`: ours with the PyTorch
    checkpoint, ours with its ONNX export, and the tutorial's."""
    tut = work / "tutorial"
    tut.mkdir()
    (tut / "predict.py").write_text(TUTORIAL_PREDICT)
    shutil.copy(HERE / "model.py", tut / "model.py")  # the tutorial imports our model.py (which imports only torch)
    shutil.copy(HERE / "class_indices.json", tut / "class_indices.json")
    net = AlexNet(num_classes=5, init_weights=True)
    torch.save(net.state_dict(), tut / "AlexNet.pth")
    ckpt = work / "best.pth"  # one of ours: weights, optimizer state and all
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(1, 3, 224, 224)).sum().backward()
    optimizer.step()
    torch.save({"model": net.state_dict(), "arch": "tutorial", "num_classes": 5,
                "classes": ["daisy", "dandelion", "roses", "sunflowers", "tulips"], "optimizer": optimizer.state_dict(),
                "eval": {"size": 224, "resize": 256}, "mean": [0.5] * 3, "std": [0.5] * 3}, ckpt)
    ours = [sys.executable, str(HERE / "predict.py"), str(image), "--no-show", "--weights"]
    commands = {"torch": (ours + [str(ckpt)], HERE), "onnx": (ours + [str(onnx_export(ckpt))], HERE),
                "tutorial": ([sys.executable, "predict.py", str(image)], tut)}
    walls: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):  # interleaved, so all see the same machine state
        for name, (cmd, cwd) in commands.items():
            walls[name].append(process_wall(cmd, cwd))
    return walls


def process_wall(command: list[str], cwd: Path) -> float:
    """Seconds one whole process takes, on the CPU, without a window."""
    env = {**os.environ, "MPLBACKEND": "Agg", "CUDA_VISIBLE_DEVICES": ""}
    t0 = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def onnx_export(ckpt: Path) -> Path:
    import export

    path = ckpt.with_suffix(".onnx")
    export.export(load_classifier(str(ckpt)), path, None)
    return path


def inference_rates(batch_size: int, repeats: int, work: Path) -> dict[str, float]:
    """Images/s of batched inference on the CPU, the same normalised 224 px batch: our
    PyTorch path (channels_last, inference_mode) and onnxruntime on its export."""
    import onnxruntime

    net = AlexNet(num_classes=5, init_weights=True).eval()
    path = work / "rates.pth"
    torch.save({"model": net.state_dict(), "arch": "tutorial", "num_classes": 5, "classes": list("abcde"),
                "eval": {"size": 224, "resize": 256}}, path)
    session = onnxruntime.InferenceSession(str(onnx_export(path)), providers=["CPUExecutionProvider"])
    x = torch.randn(batch_size, 3, 224, 224)
    fast = net.to(memory_format=torch.channels_last)
    x_last = x.contiguous(memory_format=torch.channels_last)

    def run_torch():
        with torch.inference_mode():
            fast(x_last)

    runs = {"pytorch": run_torch, "onnxruntime": lambda: session.run(None, {"images": x.numpy()})}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(repeats + 1):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            if i:  # the first pass warms up
                times[name].append(time.perf_counter() - t0)
    return {name: batch_size / statistics.median(t) for name, t in times.items()}


# ---------------------------------------------------------------- profile of one epoch
def profile_epoch(root: Path, batch_size: int, device: str, work: Path) -> dict:
    """torch.profiler over one default training epoch (after a warm-up epoch, resumed so the
    profile holds that epoch alone): the operators that took the most time of their own,
    against the epoch's wall time."""
    from torch.profiler import ProfilerActivity, profile

    common = ["--data", str(root), "--output-dir", str(work), "--batch-size", str(batch_size), "--device", device,
              "--quiet"]
    train.main(train.get_args_parser().parse_args([*common, "--epochs", "2", "--overwrite"]))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        summary = train.main(train.get_args_parser().parse_args([*common, "--epochs", "3", "--resume",
                                                                 str(work / "last.pth")]))
    row = summary["history"][-1]
    events = prof.key_averages()
    ops = sorted((e for e in events if not e.key.startswith("ProfilerStep")),
                 key=lambda e: e.self_cpu_time_total, reverse=True)[:16]
    return {"epoch_train_s": row["train_seconds"], "images_per_s": row["train_images_per_s"],
            "top_ops_self_s": {e.key: e.self_cpu_time_total / 1e6 for e in ops},
            "minor_page_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt}


def report_profile(res: dict) -> None:
    wall = res["epoch_train_s"]
    print(f"\none default training epoch: {wall:.2f} s, {res['images_per_s']:.1f} images/s; the operators "
          f"with the most time of their own (all threads, the whole profiled run, against the epoch's wall time):")
    for name, seconds in res["top_ops_self_s"].items():
        print(f"  {name[:48]:48}{seconds:8.2f} s {seconds / wall:6.1%}")


# ---------------------------------------------------------------- 5. deployment formats
def format_table(weights: Path, root: Path, batch_size: int, repeats: int, predict_runs: int) -> dict:
    """Top-1, images/s, one-image predict.py latency and file size for each format of ``weights``."""
    import numpy as np
    import onnxruntime

    import export

    work = Path(tempfile.mkdtemp(prefix="alexnet-formats-"))
    try:
        classifier = load_classifier(str(weights))
        files, targets = export.labelled(str(root / "val"), classifier.names)
        calibration = folders.list_images(str(root / "train")).files
        fp32, int8 = work / "fp32.onnx", work / "int8.onnx"
        export.export(classifier, fp32, None)
        export.quantize(fp32, int8, folders.spread(calibration, 300))
        views = [v for _, v, err in decoded(classifier, files, 64) if err is None]
        x = transforms.normalize(torch.stack(views), classifier.mean, classifier.std).contiguous()
        batches = list(x.split(batch_size))[:-1] or [x]  # full batches only: the rate at this batch size
        model = classifier.model.eval()

        def torch_logits(dtype):
            def run(batch):
                with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                    return model(batch.contiguous(memory_format=torch.channels_last)).float()
            return run

        def onnx_logits(path):
            options = onnxruntime.SessionOptions()
            # each session has its own thread pool; spinning idle threads would slow the session timed next
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            return lambda batch: torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])

        rows = {"PyTorch fp32": (torch_logits(None), weights, weights),
                "PyTorch bf16": (torch_logits(torch.bfloat16), None, None) if cpu_has_bf16() else None,
                "ONNX fp32": (onnx_logits(fp32), fp32, fp32), "ONNX int8": (onnx_logits(int8), int8, int8)}
        rows = {name: spec for name, spec in rows.items() if spec is not None}
        times: dict[str, list[float]] = {name: [] for name in rows}
        walls: dict[str, list[float]] = {name: [] for name, spec in rows.items() if spec[2]}
        for i in range(max(repeats, predict_runs) + 1):  # interleaved, so every format meets the same machine
            for name, (logits, _, predict_with) in rows.items():
                for batch in batches if i <= repeats else []:
                    t0 = time.perf_counter()
                    logits(batch)
                    if i:  # the first pass warms up
                        times[name].append(time.perf_counter() - t0)
                if i and i <= predict_runs and predict_with:
                    walls[name].append(predict_wall(files[0], predict_with))
        table = {}
        for name, (logits, model_file, _) in rows.items():
            predicted = torch.cat([logits(b).argmax(1) for b in x.split(batch_size)])
            table[name] = {"top1": (predicted == torch.tensor(targets)).double().mean().item(),
                           "images_per_s": len(batches[0]) / statistics.median(times[name]),
                           "predict_wall_s": statistics.median(walls[name]) if name in walls else None,
                           "file_mib": model_file.stat().st_size / 2**20 if model_file else None}
        return {"cpu": cpu_summary(), "weights": str(weights), "data": str(root / "val"), "images": len(x),
                "batch_size": len(batches[0]), "threads": torch.get_num_threads(), "formats": table,
                "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def predict_wall(image: str, weights: Path) -> float:
    return process_wall([sys.executable, str(HERE / "predict.py"), image, "--no-show", "--weights", str(weights)],
                        HERE)


def report_formats(res: dict) -> None:
    print(f"\n{res['weights']} on {res['images']} images of {res['data']}, batch {res['batch_size']}, "
          f"{res['threads']} threads, onnxruntime {res['onnxruntime']}\n")
    print("| format | top-1 | images/s | vs ONNX fp32 | predict.py, one image | file |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = res["formats"]["ONNX fp32"]["images_per_s"]
    for name, r in res["formats"].items():
        wall = f"{r['predict_wall_s']:.2f} s" if r["predict_wall_s"] else "(predict.py infers in fp32)"
        size = f"{r['file_mib']:.1f} MiB" if r["file_mib"] else "-"
        print(f"| {name} | {r['top1']:.4f} | {r['images_per_s']:.1f} | {r['images_per_s'] / base:.2f}x | {wall} "
              f"| {size} |")


def peak_rss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def run(args) -> dict:
    device = pick_device(args.device, 0)
    work = Path(tempfile.mkdtemp(prefix="alexnet-bench-"))
    try:
        root = Path(args.data) if args.data else Path(shapes.make_shapes(
            work / "photos", args.train_per_class, args.val_per_class, size=256, photo_sides=(320, 500)))
        for part in ("train", "val"):
            folders.find_classes(str(root / part))  # a DataError naming the folder if it is none
        n_train = len(list((root / "train").rglob("*.*")))
        print(f"bench: {root} ({n_train} training images), device {device}, batch {args.batch_size}, "
              f"{args.repeats} repeats, {torch.get_num_threads()} threads", file=sys.stderr)
        res: dict = {"device": str(device), "batch_size": args.batch_size, "repeats": args.repeats, "data": str(root)}
        t_train, t_val, nw = tutorial_epochs(root, args.batch_size, args.repeats, device)
        res["tutorial"] = {"train": t_train, "val": t_val, "workers": nw}
        res["model_step"] = {"fp32_nchw": model_step_rate(args.batch_size, "fp32", False, device, args.steps)}
        keep_freed_memory()  # what setup_machine does in train.py; from here on, ours is measured as it trains
        rss_before = peak_rss_mib()
        res["default"] = default_epochs(root, args.batch_size, args.repeats, args.device, work / "run")
        other = "off" if device.type == "cuda" else "on"  # the path auto did not pick
        res["default_device_batches_" + other] = default_epochs(root, args.batch_size, args.repeats, args.device,
                                                                work / "run-other", "--device-batches", other)
        res["batch_building_images_per_s"] = batch_building_rates(root, args.batch_size, device, 4 * args.steps)
        res["decode_images_per_s"] = decode_rates(root, args.repeats)
        res["peak_rss_mib"] = {"after_tutorial": rss_before, "after_default": peak_rss_mib()}
        precision = res["default"]["precision"]
        res["model_step"][f"{precision}_channels_last_fused"] = model_step_rate(args.batch_size, precision, True,
                                                                                device, args.steps)
        if args.compile:
            res["model_step"][f"{precision}_channels_last_fused_compiled"] = model_step_rate(
                args.batch_size, precision, True, device, args.steps, compile=True)
        res["matmul_gflops"] = {"fp32": matmul_gflops(torch.float32, device),
                                "bf16": matmul_gflops(torch.bfloat16, device) if bf16_supported(device) else None}
        res["train_gflop_per_image"] = train_flops_per_image() / 1e9
        if device.type == "cpu":
            image = next((root / "val").rglob("*.jpg"))
            res["predict_wall_s"] = predict_walls(image, args.predict_runs, work)
            res["inference_images_per_s"] = inference_rates(args.batch_size, args.repeats + 2, work)
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(res: dict) -> None:
    med = statistics.median
    t, d = res["tutorial"], res["default"]
    prec = d["precision"]
    peak = res["matmul_gflops"]["bf16" if prec == "bf16" else "fp32"]  # train.py picks bf16 only where it exists
    limit = peak / res["train_gflop_per_image"]
    other_key = next(k for k in res if k.startswith("default_device_batches_"))
    o, other = res[other_key], other_key.rsplit("_", 1)[1]
    rows = [
        ("training epoch, images/s", med(t["train"]), med(d["train"]), med(o["train"])),
        ("validation, images/s", med(t["val"]), med(d["val"]), med(o["val"])),
    ]
    print(f"\n{'':34}{'tutorial':>12}{'default':>12}{'ratio':>8}   {f'--device-batches {other}':>20}{'ratio':>8}")
    for name, a, b, c in rows:
        print(f"{name:34}{a:12.1f}{b:12.1f}{b / a:7.2f}x   {c:20.1f}{c / a:7.2f}x")
    print(f"  (tutorial: fp32 NCHW, {t['workers']} workers, PIL decode every epoch, val batch 4; "
          f"default: {prec}, channels_last, fused optimizer, decode-once cache, larger val batch, training batches "
          f"{'built on the device' if other == 'off' else 'cropped per image'})")
    bb = res["batch_building_images_per_s"]
    print(f"  making batches alone (crop + flip, no model): per image {bb['per_image']:.0f}, batched on "
          f"{res['device']} {bb['batched']:.0f} images/s ({bb['batched'] / bb['per_image']:.2f}x)")
    print(f"  default start-up (decoding {res['data']} into the cache, model): {d['startup_s']:.1f} s, once")
    rates = res.get("decode_images_per_s")
    if rates:
        print("  decoding one image at a time, images/s: " + ", ".join(f"{name} {v:.0f} ({v / rates['pillow']:.2f}x)"
                                                                        for name, v in rates.items()))
    ms = res["model_step"]
    print("\nmodel step alone (synthetic batch), images/s:")
    for name, v in ms.items():
        print(f"  {name:32}{v:10.1f}")
    mm = res["matmul_gflops"]
    bf16 = f"bf16 {mm['bf16']:.0f} GFLOP/s" if mm["bf16"] else "bf16 not supported by this hardware (not timed)"
    print(f"matmul 2048^3: fp32 {mm['fp32']:.0f} GFLOP/s, {bf16}")
    print(f"training step: {res['train_gflop_per_image']:.2f} GFLOP per image (forward + backward)")
    step = ms[f"{prec}_channels_last_fused"]
    print(f"limit at the {prec} matmul peak: {limit:.0f} images/s; the model step alone reaches {step / limit:.0%} "
          f"of it, the default training epoch {med(d['train']) / limit:.0%}")
    print(f"default training epoch: {med(d['train']) / step:.0%} of the model step's rate")
    if prec != "bf16" and mm["bf16"]:
        bf16_limit = mm["bf16"] / res["train_gflop_per_image"]
        print(f"  (against the bf16 matmul peak, {bf16_limit:.0f} images/s: {med(d['train']) / bf16_limit:.0%}; "
              f"bf16 is not faster than fp32 on this CPU, so train.py trains in fp32)")
    rss = res["peak_rss_mib"]
    print(f"peak memory (RSS): {rss['after_tutorial']:.0f} MiB after the tutorial path, "
          f"{rss['after_default']:.0f} MiB after the cached default path")
    if "predict_wall_s" in res:
        p = {name: med(walls) for name, walls in res["predict_wall_s"].items()}
        print(f"\npredict.py, one image, whole process (--no-show), median of {len(res['predict_wall_s']['onnx'])}:")
        for name, label in (("tutorial", "tutorial's predict.py"), ("torch", "ours, PyTorch checkpoint"),
                            ("onnx", "ours, ONNX export (no torch)")):
            print(f"  {label:32}{p[name]:8.2f} s  {p[name] / p['tutorial']:5.2f}x the tutorial's")
        rates = res["inference_images_per_s"]
        print(f"batched inference on the CPU, batch {res['batch_size']} at 224 px: PyTorch {rates['pytorch']:.1f}, "
              f"onnxruntime {rates['onnxruntime']:.1f} images/s ({rates['onnxruntime'] / rates['pytorch']:.2f}x)")


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(description="Tutorial pipeline vs ours, side by side.")
    p.add_argument("--data", help="folder with train/ and val/ (default: generated 320-500 px photos)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=32, help="the tutorial's 32 by default, for both paths")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per path (medians are reported)")
    p.add_argument("--steps", type=int, default=20, help="timed steps for the model-step figures")
    p.add_argument("--predict-runs", type=int, default=5, help="whole-process predict.py runs of each script")
    p.add_argument("--train-per-class", type=int, default=80)
    p.add_argument("--val-per-class", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="also time the model step under torch.compile")
    p.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    p.add_argument("--profile", action="store_true", help="only torch.profiler's breakdown of one default training "
                   "epoch on --data (or the generated photos)")
    p.add_argument("--formats", metavar="WEIGHTS", help="only the table of deployment formats of this checkpoint, "
                   "on --data's val/ (calibrating int8 on its train/)")
    return run_main(bench, p.parse_args(argv))


def bench(args) -> int:
    print(f"CPU: {cpu_summary()}")
    if args.formats:
        if not args.data:
            raise ArgumentError("--formats: needs --data DIR, the folder holding the model's train/ and val/ images")
        res = format_table(Path(args.formats), Path(args.data), args.batch_size, args.repeats, args.predict_runs)
        if args.json:
            print(json.dumps(res, indent=2))
        else:
            report_formats(res)
        return 0
    if args.profile:
        work = Path(tempfile.mkdtemp(prefix="alexnet-profile-"))
        try:
            root = Path(args.data) if args.data else Path(shapes.make_shapes(
                work / "photos", args.train_per_class, args.val_per_class, size=256, photo_sides=(320, 500)))
            res = profile_epoch(root, args.batch_size, args.device, work / "run")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if args.json:
            print(json.dumps(res, indent=2))
        else:
            report_profile(res)
        return 0
    res = run(args)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The model file: the one home of its format. train.py builds it (``build``), every
reader loads it through ``load`` (any earlier format upgraded, every field checked), --resume
checks what it needs beyond that (``check_resumable``), and evaluate.py changes a field
through ``update``. A damaged or crafted value is one line naming the file and the field,
never a traceback or a confident wrong answer later.

The field checks (``check_fields``) also read an ONNX export's metadata, so this module
imports torch only inside the functions that need it: predict.py's ONNX path stays torch-free.
"""
import dataclasses
import functools
import hashlib
import math
import os
import random
import re
import types
import typing
import warnings
import zipfile
from pathlib import Path

from alexnet import folders, outputs
from alexnet.errors import ArgumentError, CheckpointError

# the paper's width with Adam's two buffers per weight and an EMA copy is about 1.2 GB
MAX_CHECKPOINT_BYTES = 4 * 2**30
# The layout of the dict train.py saves; written into it as "format". upgrade reads
# every earlier one, each kept as a fixture in tests/fixtures/checkpoints/:
#   0  a bare state_dict: the tutorial's AlexNet.pth, torchvision's weights
#   1  train.py 694ef3c..30913d2: config as argparse left it (None for an option not given),
#      plateau {"scale", "bad_epochs"}, Python's RNG state in three spellings, no plan
#   2  train.py 0f3e2ed..23402ed: + plan, ReduceLROnPlateau's own state_dict
#   3  + format, precision and device_type (the training precision kept on resume), temperature
#      (evaluate.py --calibrate; 1.0 = uncalibrated), optionally min_confidence (evaluate.py --ood
#      --store-threshold; None = none stored)
CHECKPOINT_FORMAT = 3
MIN_IMG_SIZE, MAX_IMG_SIZE = 63, 1024  # AlexNet's smallest input; a batch of 32 at 1024 px needs ~10 GiB to train
MAX_CLASSES = 100_000
PRECISIONS = ("fp32", "bf16", "fp16")  # what a run trains at; inference is always fp32
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0  # calibration (stats.fit_temperature keeps T in this range)


def check_fields(info: dict, path: str) -> None:
    """``num_classes`` and whichever of the other fields ``info`` has."""
    def need(ok: bool, name: str, problem: str) -> None:
        if not ok:
            raise CheckpointError(f"{path}: field {name!r} {problem}")

    n = info.get("num_classes")
    need(_is_int(n) and 1 <= n <= MAX_CLASSES, "num_classes", f"is {n!r}; must be a whole number in 1..{MAX_CLASSES}")
    if info.get("classes") is not None:
        names = info["classes"]
        need(isinstance(names, list) and all(isinstance(c, str) for c in names), "classes", "is not a list of names")
        need(len(names) == n, "classes", f"lists {len(names)} names for {n} outputs")
        need(len(set(names)) == n, "classes", "names a class twice")
    if "eval" in info:
        ev = info["eval"]
        need(isinstance(ev, dict) and _is_int(ev.get("size")) and _is_int(ev.get("resize")), "eval",
             "must be {\"size\": int, \"resize\": int}")
        need(MIN_IMG_SIZE <= ev["size"] <= MAX_IMG_SIZE, "eval.size",
             f"is {ev['size']}; must be in {MIN_IMG_SIZE}..{MAX_IMG_SIZE}")
        need(ev["resize"] == 0 or ev["size"] <= ev["resize"] <= 4096, "eval.resize",
             f"is {ev['resize']}; must be 0 or in {ev['size']}..4096")
    for key in ("mean", "std"):
        if key in info:
            v = info[key]
            need(isinstance(v, (list, tuple)) and len(v) == 3 and
                 all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v),
                 key, "must be three finite numbers (R, G, B)")
            need(key == "mean" or all(x > 0 for x in v), key, "must be three positive numbers")
    for key in ("best_acc", "top1_fp32", "top1_int8"):  # the last two: export.py --int8's measurement
        if info.get(key) is not None:
            acc = info[key]
            need(isinstance(acc, (int, float)) and not isinstance(acc, bool) and 0 <= acc <= 1, key,
                 "must be a number in [0, 1]")
    if info.get("epoch") is not None:
        need(_is_int(info["epoch"]) and info["epoch"] >= 0, "epoch", "must be a whole number >= 0")
    for key in ("config", "plan"):
        if info.get(key) is not None:
            need(isinstance(info[key], dict), key, "must be a dict")
    if "temperature" in info:
        t = info["temperature"]
        need(isinstance(t, (int, float)) and not isinstance(t, bool) and MIN_TEMPERATURE <= t <= MAX_TEMPERATURE,
             "temperature", f"is {t!r}; must be a number in {MIN_TEMPERATURE}..{MAX_TEMPERATURE}")
    if info.get("min_confidence") is not None:
        v = info["min_confidence"]
        need(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1, "min_confidence",
             f"is {v!r}; must be a number in (0, 1)")
    if info.get("precision") is not None:
        need(info["precision"] in PRECISIONS, "precision", f"is {info['precision']!r}; known: {', '.join(PRECISIONS)}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ---------------------------------------------------------------- reading
def infer_arch(state_dict: dict, path: str) -> str:
    """Which variant a raw state_dict belongs to, from the width of its first convolution."""
    from model import ARCHS

    first = state_dict.get("features.0.weight")
    if first is None:
        raise CheckpointError(f"{path}: a state_dict, but not of an AlexNet (no features.0.weight)")
    for name, arch in ARCHS.items():
        if first.shape[0] == arch.widths[0]:
            return name
    known = ", ".join(f"{arch.widths[0]} ({name})" for name, arch in ARCHS.items())
    raise CheckpointError(f"{path}: features.0.weight has {first.shape[0]} filters of shape {list(first.shape[1:])}; "
                          f"the AlexNet widths known here start with {known}")


def load_checkpoint(path: str, mmap: bool = False) -> dict:
    """Load one of our checkpoints, or a raw state_dict such as the tutorial's ``AlexNet.pth``,
    as a dict with at least ``model``, ``arch`` and ``num_classes``, every field checked
    (``check_checkpoint``): a bad one is a CheckpointError naming the file and the field.

    ``weights_only=True``: a file that would run code when unpickled is refused, not run.
    ``mmap=True`` reads only the tensors used (predict.py skips the optimizer state); files
    in the legacy (pre-1.6, non-zip) format cannot be mapped and are read whole.
    """
    import torch

    folders.check_file(path, "checkpoint", CheckpointError, MAX_CHECKPOINT_BYTES)
    kind = folders.describe_contents(path)
    if kind == "a damaged ZIP archive":  # what a checkpoint cut short by a crash or a full disk looks like
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {kind})")
    if not kind.startswith("a PyTorch checkpoint"):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint at all: it is {kind}")
    try:
        with warnings.catch_warnings():  # torch warns about a pickle's protocol before refusing it: the refusal says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as e:
        text = str(e)
        why = ("refused for safety: it holds pickled objects that could run code (only plain weights are loaded)"
               if "weights_only" in text or "Unsupported global" in text else
               f"not a readable checkpoint (truncated or corrupt: {text.splitlines()[0][:120] if text else type(e).__name__})")
        raise CheckpointError(f"{path}: {why}") from None
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        arch = infer_arch(ckpt, path)
        if "classifier.6.weight" not in ckpt:
            raise CheckpointError(f"{path}: a state_dict, but not of an AlexNet (no classifier.6.weight)")
        ckpt = {"model": ckpt, "arch": arch, "num_classes": ckpt["classifier.6.weight"].shape[0]}
    elif not (isinstance(ckpt, dict) and "model" in ckpt and "arch" in ckpt):
        raise CheckpointError(f"{path}: not an AlexNet checkpoint (expected a state_dict or a train.py checkpoint)")
    ckpt = upgrade_checkpoint(ckpt, path)
    check_checkpoint(ckpt, path)
    return ckpt


def upgrade_checkpoint(ckpt: dict, path: str) -> dict:
    """Any earlier format (CHECKPOINT_FORMAT's list) as the current one, so that readers
    need not know the history. A dict without "format" that has a config but no plan is
    format 1; any other (format 2, or a hand-made {"model", "arch", ...}) needs no change
    but the new fields."""
    fmt = ckpt.get("format", 1 if "config" in ckpt and "plan" not in ckpt else 2)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: field 'format' is {fmt!r}: written by a newer version of this project "
                              f"(this one reads formats up to {CHECKPOINT_FORMAT}); update it to read this file")
    from model import ARCHS, default_switches, variant_of

    ckpt = dict(ckpt)
    if fmt < 2 and isinstance(ckpt.get("config"), dict):
        config = {k: v for k, v in ckpt["config"].items() if v is not None}  # None: argparse's "not given"
        if isinstance(ckpt.get("eval"), dict):
            config.setdefault("val_resize", ckpt["eval"].get("resize"))
        ckpt["config"] = config
        ckpt["plan"] = {}  # the epochs and crop sizes follow from the config, as they did then
        old = ckpt.get("plateau")
        # the optimizer's learning rate already holds the old schedule's scale
        ckpt["plateau"] = ({"best": ckpt.get("best_acc", 0.0), "num_bad_epochs": old.get("bad_epochs", 0)}
                           if config.get("sched") == "plateau" and isinstance(old, dict) else None)
        rng = ckpt.get("rng")
        python = rng.get("python") if isinstance(rng, dict) else None  # getstate(), its list(), or its 625 numbers
        if isinstance(python, list) and len(python) == 625:
            ckpt["rng"] = rng | {"python": (3, tuple(python), None)}
        elif isinstance(python, list) and len(python) == 3 and isinstance(python[1], (list, tuple)):
            ckpt["rng"] = rng | {"python": (python[0], tuple(python[1]), python[2])}
    if fmt < 3:  # the precision was not recorded: chosen afresh; the probabilities were never calibrated
        ckpt = {"precision": None, "device_type": None, "temperature": 1.0} | ckpt
    if "net" not in ckpt and ckpt["arch"] in ARCHS:
        # written before the switches (when every net had one column) or by hand: the columns read from the weights
        ckpt["net"] = default_switches(ckpt["arch"]) | {"columns": columns_of(ckpt.get("model"))}
    if isinstance(ckpt.get("config"), dict) and isinstance(ckpt.get("net"), dict) and "variant" not in ckpt["config"]:
        ckpt["config"] = ckpt["config"] | {"variant": variant_of(ckpt["arch"], ckpt["net"])}
    ckpt.setdefault("min_confidence", None)  # evaluate.py --ood --store-threshold; optional in format 3
    if isinstance(ckpt.get("metrics"), list):  # metrics rows before 'train_size' was named for what it holds
        ckpt["metrics"] = [{("crop_size" if k == "train_size" else k): v for k, v in row.items()}
                           if isinstance(row, dict) else row for row in ckpt["metrics"]]
    ckpt["format"] = CHECKPOINT_FORMAT
    return ckpt


def columns_of(state_dict) -> int:
    """1 or 2: whether convolution 2 sees all of convolution 1's channels or half (model.py's
    ``columns``); 1 where the weights do not say (check_checkpoint then names what is wrong)."""
    import torch

    if not isinstance(state_dict, dict):
        return 1
    convs = sorted((int(k.split(".")[1]), v.shape) for k, v in state_dict.items()
                   if isinstance(k, str) and re.fullmatch(r"features\.\d+\.weight", k)
                   and isinstance(v, torch.Tensor) and v.dim() == 4)
    if len(convs) < 2:
        return 1
    (_, first), (_, second) = convs[:2]
    return 2 if first[0] == 2 * second[1] else 1


def check_checkpoint(ckpt: dict, path: str) -> None:
    """Every field a reader uses, so that a damaged or crafted file is one line naming the
    field rather than a traceback or a plausible wrong answer (NaN weights print ``nan``)."""
    import torch

    from model import ARCHS, check_switches

    for key in ("model", "raw_model"):
        if key not in ckpt:
            continue
        weights = ckpt[key]
        if not (isinstance(weights, dict) and weights and
                all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items())):
            raise CheckpointError(f"{path}: field {key!r} is not a state_dict (names -> tensors)")
        bad = next((k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            raise CheckpointError(f"{path}: field '{key}.{bad}' holds NaN or infinite values: the weights are "
                                  f"broken (saved from a diverged run?)")
    if ckpt["arch"] not in ARCHS:
        raise CheckpointError(f"{path}: field 'arch' is {ckpt['arch']!r}; known: {', '.join(ARCHS)}")
    try:
        check_switches(ckpt["net"] if isinstance(ckpt["net"], dict) else {})
    except ValueError as e:
        raise CheckpointError(f"{path}: field 'net': {e}") from None
    check_fields(ckpt, path)


def from_checkpoint(ckpt: dict, path: str):
    """Rebuild the AlexNet a checkpoint describes and load its weights."""
    from model import AlexNet, variant_of

    model = AlexNet(num_classes=int(ckpt["num_classes"]), arch=ckpt["arch"], **ckpt["net"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        variant = " ".join(variant_of(ckpt["arch"], ckpt["net"]))
        raise CheckpointError(f"{path}: weights do not fit AlexNet(arch={ckpt['arch']!r}"
                              f"{f', variant {variant}' if variant else ''}, "
                              f"num_classes={ckpt['num_classes']}): {detail[:200]}") from None
    return model


IMAGENET = "imagenet"  # --weights imagenet: torchvision's AlexNet_Weights.IMAGENET1K_V1


def imagenet_file() -> str:
    """The path of torchvision's ImageNet AlexNet weights in torch's hub cache, downloaded
    there first if missing (torchvision's weights API: its URL, a progress bar, its hash
    check). Offline, one line: which file to fetch and where to put it."""
    import torch
    from torchvision.models import AlexNet_Weights

    weights = AlexNet_Weights.IMAGENET1K_V1
    dest = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # TORCH_HOME or XDG_CACHE_HOME is a file, or cannot be made
        raise CheckpointError(f"--weights {IMAGENET}: torch's hub cache {dest.parent} cannot be a folder "
                              f"({e.strerror or e}); point TORCH_HOME at a folder you can write, e.g. "
                              f"TORCH_HOME={Path.home() / '.cache' / 'torch'}") from None
    if not dest.is_file():
        try:
            weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
        except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError; a bad hash a RuntimeError
            why = getattr(e, "reason", None) or (str(e).splitlines() or [type(e).__name__])[0]
            raise CheckpointError(f"--weights {IMAGENET}: cannot download {weights.url} ({why}); fetch it on a "
                                  f"machine that can and put it at {dest}") from None
    check_sha256(dest, hub_hash_prefix(dest.name))
    return str(dest)


def hub_hash_prefix(name: str) -> str:
    """The SHA-256 prefix a torch hub file name carries (alexnet-owt-7be5be79.pth: 7be5be79)."""
    import torch

    return torch.hub.HASH_REGEX.search(name).group(1)


def check_sha256(path: Path, prefix: str) -> None:
    """torch.hub checks a file's hash only as it downloads it; one placed in its cache by hand,
    or cut short, is checked here, as the README promises."""
    st = path.stat()
    digest = sha256_of(str(path), st.st_size, st.st_mtime_ns)
    if not digest.startswith(prefix):
        raise CheckpointError(f"{path}: its SHA-256 starts {digest[:len(prefix)]}, not {prefix} as its "
                              f"name says: a different or damaged file. Remove it, and run again to download it "
                              f"(or fetch it again by hand)")


@functools.lru_cache(maxsize=4)
def sha256_of(path: str, size: int, mtime_ns: int) -> str:
    """A file's SHA-256, read once per process while its size and time stay the same: a run
    reads --weights twice (settings, then the model), and 233 MB take about 0.4 s to hash."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_weights(source: str, mmap: bool = False) -> dict:
    """--weights: a checkpoint or state_dict file, or ``imagenet`` (torchvision's weights)."""
    return load_checkpoint(imagenet_file() if source == IMAGENET else source, mmap)


# ---------------------------------------------------------------- what --resume reads
RESUME_FIELDS = {"optimizer": dict, "scaler": dict, "metrics": list, "rng": dict, "epoch": int, "best_epoch": int,
                 "best_acc": (int, float), "config": dict, "plan": dict}


def random_states(rng) -> bool:
    """Whether ``rng`` is what train.py saves: Python's state and torch's CPU state (and a GPU's)."""
    import torch

    if not isinstance(rng, dict):
        return False
    python, state, cuda = rng.get("python"), rng.get("torch"), rng.get("cuda")
    return (isinstance(python, tuple) and len(python) == 3 and isinstance(python[1], tuple)
            and isinstance(state, torch.Tensor) and state.dtype == torch.uint8
            and (cuda is None or isinstance(cuda, torch.Tensor) and cuda.dtype == torch.uint8))


def check_resumable(ckpt: dict, path: str, config_types: dict) -> None:
    """What --resume reads beyond the fields every reader checks (check_checkpoint), the
    config by ``config_types`` (settings.TYPES): one line naming the field, never a
    traceback from a damaged file."""
    for key, kind in RESUME_FIELDS.items():
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f"{path}: field {key!r} is missing or not of type "
                                  f"{getattr(kind, '__name__', 'number')}; this checkpoint cannot be resumed")
    if not random_states(ckpt["rng"]):
        raise CheckpointError(f"{path}: field 'rng' is not the random states train.py saves; this checkpoint cannot "
                              f"be resumed")
    position = ckpt.get("position")  # a stop mid-epoch (train.py's save_position)
    if position is not None and not (
            isinstance(position, dict) and position.get("epoch") == ckpt["epoch"]
            and isinstance(position.get("steps"), int) and position["steps"] >= 1
            and isinstance(position.get("sums"), dict)
            and set(position["sums"]) - {"loss_max"} == {"seen", "correct", "loss_sum", "size"}
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in position["sums"].values())
            and isinstance(position.get("rng"), list) and position["rng"] and all(map(random_states, position["rng"]))):
        raise CheckpointError(f"{path}: field 'position' (where a stopped epoch was) is damaged; this checkpoint "
                              f"cannot be resumed (best.pth can, with --weights)")
    for key, needed in (("raw_model", ckpt["config"].get("ema")), ("plateau", ckpt["config"].get("sched") == "plateau")):
        if needed and not isinstance(ckpt.get(key), dict):
            raise CheckpointError(f"{path}: field {key!r} is missing, which its config needs; this checkpoint cannot "
                                  f"be resumed")
    for key, value in ckpt["config"].items():
        if key not in config_types or value is None:
            continue
        kind = config_types[key]
        if isinstance(kind, types.UnionType):  # str | None: the value was not None
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        kinds = (int, float) if kind is float else (list, tuple) if typing.get_origin(kind) is tuple else kind
        if not isinstance(value, kinds) or isinstance(value, bool) != (kind is bool):
            raise CheckpointError(f"{path}: field 'config.{key}' is {value!r}, not of type {kind.__name__}; "
                                  f"this checkpoint cannot be resumed")


def check_no_later_epochs(path: str, epoch: int, last: Path) -> None:
    """Resuming best.pth (or a copy) would overwrite the output folder's last.pth; refuse
    when that holds later epochs, which would be lost."""
    import torch

    if not last.is_file() or os.path.samefile(path, last):
        return
    try:
        later = torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("epoch", 0)
    except Exception:  # an unreadable last.pth holds nothing to keep
        return
    if isinstance(later, int) and later > epoch:
        raise ArgumentError(f"--resume {path}: {last} holds a later epoch ({later} > {epoch}) that resuming this file "
                            f"would overwrite; resume from {last}, or pass another --output-dir")


# ---------------------------------------------------------------- writing
def build(cfg, machine, trainer, state, classes: list[str]) -> dict:
    """One dict of plain types from a run's Config, Machine, Trainer and RunState: everything
    predict.py needs, and everything --resume needs."""
    import torch

    # "model" holds the weights that were validated, so predict.py and --weights need not know about EMA
    weights = {"model": trainer.validated_model.state_dict()}
    if trainer.ema is not None:
        weights["raw_model"] = trainer.model.state_dict()
    return {**weights, "format": CHECKPOINT_FORMAT, "arch": cfg.arch, "net": trainer.model.switches,
            "num_classes": len(classes), "classes": list(classes),
            "epoch": state.epoch, "best_acc": state.best_acc, "best_epoch": state.best_epoch,
            "optimizer": trainer.optimizer.state_dict(), "scaler": trainer.scaler.state_dict(),
            "plateau": trainer.plateau.state_dict() if trainer.plateau else None,
            "config": dataclasses.asdict(cfg), "plan": dataclasses.asdict(state.plan), "metrics": state.history,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
            "lighting": trainer.lighting_basis, "eval": {"size": cfg.img_size, "resize": cfg.val_resize},
            "mean": list(cfg.mean), "std": list(cfg.std),
            "precision": machine.precision, "device_type": machine.device.type,
            "temperature": 1.0}  # evaluate.py --calibrate fits it on the validation split


def update(path: str, fields: dict) -> dict:
    """Rewrite ``fields`` of the checkpoint at ``path`` (atomically, never while a train.py
    writes its folder); returns it as it was."""
    with outputs.not_training(path):
        ckpt = load_checkpoint(path)
        outputs.save_torch(ckpt | fields, Path(path))
    return ckpt

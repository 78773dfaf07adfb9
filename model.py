"""AlexNet in three widths, laid out like torchvision's ``models/alexnet.py``.

    from model import AlexNet
    net = AlexNet(num_classes=5, init_weights=True)          # the tutorial's half-width net
    net = AlexNet(num_classes=1000, arch="torchvision")      # loads torchvision's weights
    net = AlexNet(num_classes=1000, arch="paper")            # Krizhevsky et al. 2012

The attribute names ``features`` / ``avgpool`` / ``classifier`` and the layer order
keep the state_dict keys equal to the tutorial's ``AlexNet.pth`` and to
``torchvision.models.alexnet().state_dict()``.
"""
import warnings
import zipfile

import torch
from torch import nn

import folders
import metadata
from errors import CheckpointError

# the paper's width with Adam's two buffers per weight and an EMA copy is about 1.2 GB
MAX_CHECKPOINT_BYTES = 4 * 2**30
# The layout of the dict train.py saves; written into it as "format". upgrade_checkpoint reads
# every earlier one, each kept as a fixture in tests/fixtures/checkpoints/:
#   0  a bare state_dict: the tutorial's AlexNet.pth, torchvision's weights
#   1  train.py 694ef3c..30913d2: config as argparse left it (None for an option not given),
#      plateau {"scale", "bad_epochs"}, Python's RNG state in three spellings, no plan
#   2  train.py 0f3e2ed..23402ed: + plan, ReduceLROnPlateau's own state_dict
#   3  + format, precision and device_type (the training precision kept on resume), temperature
#      (evaluate.py --calibrate; 1.0 = uncalibrated), optionally min_confidence (evaluate.py --ood
#      --store-threshold; None = none stored)
CHECKPOINT_FORMAT = 3

# conv widths (5 layers) and hidden FC width for each variant
ARCHS: dict[str, tuple[tuple[int, int, int, int, int], int]] = {
    "tutorial": ((48, 128, 192, 192, 128), 2048),
    "torchvision": ((64, 192, 384, 256, 256), 4096),
    "paper": ((96, 256, 384, 384, 256), 4096),
}


def _block(in_ch: int, out_ch: int, kernel: int, lrn: bool, pool: bool, **conv) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel_size=kernel, **conv), nn.ReLU(inplace=True)]
    if lrn:
        # paper section 3.3: k=2, n=5, alpha=1e-4, beta=0.75, applied after the ReLU
        layers.append(nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0))
    if pool:
        layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
    return layers


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000, init_weights: bool = False, arch: str = "tutorial",
                 dropout: float = 0.5) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        (c1, c2, c3, c4, c5), hidden = ARCHS[arch]
        lrn = arch == "paper"
        self.arch = arch
        self.features = nn.Sequential(
            *_block(3, c1, 11, lrn, True, stride=4, padding=2),
            *_block(c1, c2, 5, lrn, True, padding=2),
            *_block(c2, c3, 3, False, False, padding=1),
            *_block(c3, c4, 3, False, False, padding=1),
            *_block(c4, c5, 3, False, True, padding=1),
        )
        # identity for 224 px inputs (6x6 already); lets any input of at least 63 px work
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(c5 * 6 * 6, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        if init_weights:
            if lrn:
                self._initialize_paper()
            else:
                self._initialize_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

    def _initialize_weights(self) -> None:
        """The tutorial's initialisation: Kaiming for convolutions, N(0, 0.01) for FC layers."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def _initialize_paper(self) -> None:
        """Paper section 5: all weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the
        hidden FC layers (to give the ReLUs positive inputs early on), 0 elsewhere."""
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        ones = {id(m) for m in (convs[1], convs[3], convs[4], linears[0], linears[1])}
        for m in convs + linears:
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 1.0 if id(m) in ones else 0.0)


def infer_arch(state_dict: dict, path: str) -> str:
    """Which variant a raw state_dict belongs to, from the width of its first convolution."""
    first = state_dict.get("features.0.weight")
    if first is None:
        raise CheckpointError(f"{path}: a state_dict, but not of an AlexNet (no features.0.weight)")
    for name, ((c1, *_), _) in ARCHS.items():
        if first.shape[0] == c1:
            return name
    known = ", ".join(f"{c1} ({name})" for name, ((c1, *_), _) in ARCHS.items())
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
    ckpt.setdefault("min_confidence", None)  # evaluate.py --ood --store-threshold; optional in format 3
    ckpt["format"] = CHECKPOINT_FORMAT
    return ckpt


def check_checkpoint(ckpt: dict, path: str) -> None:
    """Every field a reader uses, so that a damaged or crafted file is one line naming the
    field rather than a traceback or a plausible wrong answer (NaN weights print ``nan``)."""
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
    metadata.check_fields(ckpt, path)


def from_checkpoint(ckpt: dict, path: str) -> AlexNet:
    """Rebuild the model a checkpoint describes and load its weights."""
    model = AlexNet(num_classes=int(ckpt["num_classes"]), arch=ckpt["arch"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise CheckpointError(f"{path}: weights do not fit AlexNet(arch={ckpt['arch']!r}, "
                              f"num_classes={ckpt['num_classes']}): {detail[:200]}") from None
    return model


def probabilities(model: nn.Module, images: torch.Tensor, views: int = 1, temperature: float = 1.0) -> torch.Tensor:
    """Softmax over classes of normalised ``images``, averaged over ``views`` consecutive
    test-time views per image, then calibrated by ``temperature``."""
    probs = model(images).float().softmax(dim=1)
    probs = probs.view(-1, views, probs.shape[1]).mean(dim=1) if views > 1 else probs
    return calibrated(probs, temperature)


def calibrated(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temperature scaling, softmax(log p / T), applied after any averaging of views, so that
    evaluate.py fits T on exactly what predict.py reports. Every probability moves the same
    way, so the predicted class never changes. (predict.py's ONNX path does the same in numpy.)"""
    if temperature == 1.0:
        return probs
    return (probs.clamp_min(1e-12).log() / temperature).softmax(dim=1)


def grad_cam(model: AlexNet, images: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017) from the last convolution: each rectified feature
    map weighted by the mean gradient of the class score over it, summed, rectified,
    resized to the input and scaled to [0, 1]. ``images`` are normalised model inputs;
    ``classes`` default to the predicted ones. Returns N x H x W."""
    last_relu = [m for m in model.features if isinstance(m, nn.ReLU)][-1]
    maps: list[torch.Tensor] = []
    handle = last_relu.register_forward_hook(lambda module, inputs, output: maps.append(output))
    try:
        with torch.enable_grad():
            logits = model(images)
            chosen = logits.argmax(1) if classes is None else classes.to(logits.device)
            grads = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), maps[0])[0]
    finally:
        handle.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * maps[0]).sum(dim=1, keepdim=True)).detach()
    cam = torch.nn.functional.interpolate(cam.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (cam / peak)[:, 0]

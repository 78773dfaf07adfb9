"""Every setting of a training run, declared once: its type, default, help, allowed values
and what --resume does with it. train.py's command line, its --help (with each recipe's
defaults), the range checks and the resume rules are all generated from ``Config``.

    python train.py --help                  # the declarations below, in HELP_GROUPS, with every recipe's values
    python -c "from alexnet import settings; print(settings.RECIPES['paper'])"

A new option is one ``setting(...)`` line in ``Config`` and its name in ``HELP_GROUPS``; a
recipe that turns it on names it in ``RECIPES``; the code that uses it reads ``cfg.<name>``.

Resolution, once, by ``resolve_config``: the declared default < the recipe < --demo < the
command line; with --resume, the checkpoint's own settings, where only the machine's
(``on_resume=MACHINE``) and a few others (``MAY_CHANGE``) may be given again.
"""
import argparse
import dataclasses
import math
import os
import shlex
import typing
from dataclasses import dataclass, field
from pathlib import Path

from alexnet.budget import Resizing, parse_duration
from alexnet.checkpoint import (IMAGENET, MAX_IMG_SIZE, MIN_IMG_SIZE, PRECISIONS, check_no_later_epochs,
                                check_resumable, load_checkpoint, load_weights)
from alexnet.transforms import EvalTransform
from alexnet.errors import ArgumentError, CheckpointError, OneLineParser
from alexnet.images import IMAGENET_MEAN, IMAGENET_STD, TUTORIAL_MEAN, TUTORIAL_STD, eval_resize
from model import ARCHS, VARIANTS, switches_of, variant_of

FLOWERS = "data_set/flower_data"
DEMO_DATA = "data_set/demo_shapes"

# Each recipe fills the options left unset on the command line, listing only what differs
# from the declared defaults in ``Config``. `tutorial` is the seed code exactly; `paper`
# follows Krizhevsky et al. 2012, section 5 (SGD, momentum 0.9, weight decay 5e-4, lr 0.01
# divided by 10 when validation stalls, PCA lighting 0.1, 10-crop testing, batch 128, ~90
# epochs); `fast` adds the modern options. A recipe without `val_resize` resizes validation
# images to 256/224 of --img-size. Why each is what it is: docs/results.md.
RECIPES: dict[str, dict] = {
    "tutorial": dict(opt="adam", lr=2e-4, crop_scale=(0.08, 1.0), val_resize=0, balance="none"),
    "paper": dict(epochs=90, batch_size=128, opt="sgd", lr=0.01, wd=5e-4, sched="plateau", crop_scale=(0.08, 1.0),
                  lighting=0.1, tta=True, balance="none"),
    "fast": dict(wd=0.05, sched="cosine", warmup_epochs=1.0, label_smoothing=0.1, clip_grad=1.0),
}
RECIPES["long"] = RECIPES["fast"] | dict(epochs=70, img_size_start=128, lighting=0.1)  # 30 minutes on a 2-core CPU
# img_size_end -1: 6/7 of --img-size, 192 px for 224 (FixRes), the crops growing late (FFCV)
RECIPES["budget"] = RECIPES["long"] | dict(img_size_end=-1, img_size_ramp=(0.45, 0.85), lr=4e-4, dropout=0.25)
DEFAULT_RECIPE = "fast"  # beat `tutorial` at its own 10 epochs (docs/results.md)
BUDGET_RECIPE = "budget"  # the recipe --budget plans its epochs for
# --demo: small synthetic images, so a laptop CPU reaches >90% in a few minutes
DEMO = dict(img_size=112, epochs=20, batch_size=32, lr=5e-4, crop_scale=(0.5, 1.0), label_smoothing=0.0, val_resize=0)

# What --resume does with a setting: keep the checkpoint's (refusing a different value), take
# the command line's (the machine, where the files go), or allow a change (a longer run, data
# that moved, what is reported).
KEPT, MACHINE, MAY_CHANGE = "kept", "machine", "may change"
LR_MODES = ("find", "auto")  # --lr find / auto: the range test (alexnet/lr_finder.py)


def setting(default, help: str, *, check: tuple | None = None, choices=None, on_resume: str = KEPT,
            metavar=None, cli: bool = True):
    """A ``Config`` field with its declaration. ``check``: (predicate(value, cfg), what is
    allowed), the text formatted with ``c`` = the config; ``cli=False``: not an option."""
    return field(default=default, metadata=dict(help=help, check=check, choices=choices, on_resume=on_resume,
                                                metavar=metavar, cli=cli))


def valid_variant(names: tuple[str, ...]) -> bool:
    try:
        switches_of(names)
    except ValueError:
        return False
    return True


def within(lo, hi, note: str = "") -> tuple:
    return lambda v, c: lo <= v <= hi, f"must be in {lo}..{hi}{note}"


FRACTION = (lambda v, c: 0 <= v < 1, "must be in [0, 1)")
OFF_OR_POSITIVE = (lambda v, c: v >= 0, "must be >= 0 (0 = off)")
GIB_OR_AUTO = (lambda v, c: v >= 0 or v == -1, "must be >= 0 GiB, or -1 (automatic)")


@dataclass(frozen=True)
class Config:
    """Every setting of a run; a checkpoint's ``config`` holds it. The defaults are the plain
    settings a recipe starts from: an option added later is off in older checkpoints."""
    # data and augmentation
    data: str = setting(FLOWERS, "folder with train/ and val/ class folders", on_resume=MAY_CHANGE)
    demo: bool = setting(False, f"generate a synthetic 5-class shapes set into {DEMO_DATA} and train on it with "
                         + " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, tuple) else v}"
                                    for k, v in DEMO.items()))
    recipe: str = setting(DEFAULT_RECIPE, "preset for the options marked [recipe]", choices=sorted(RECIPES))
    img_size: int = setting(224, f"crop size fed to the network, {MIN_IMG_SIZE}-{MAX_IMG_SIZE}",
                            check=within(MIN_IMG_SIZE, MAX_IMG_SIZE, f" (AlexNet needs at least {MIN_IMG_SIZE} px)"))
    img_size_start: int = setting(0, "progressive resizing: training crops grow from this size at the first epoch to "
                                  "the final training size (--img-size-ramp); small early epochs run several times "
                                  "faster (0 = off)",
                                  check=(lambda v, c: v == 0 or MIN_IMG_SIZE <= v <= c.train_size_end,
                                         f"must be 0 (off) or in {MIN_IMG_SIZE}..{{c.train_size_end}} "
                                         f"(the final training size)"))
    img_size_end: int = setting(0, "the training crop size of the last epochs, if not --img-size: training a little "
                                "smaller than testing is cheaper and matches the apparent object size of the centre "
                                "crop (Touvron et al., FixRes, 2019) (0 = --img-size)",
                                check=(lambda v, c: v == 0 or MIN_IMG_SIZE <= v <= MAX_IMG_SIZE,
                                       f"must be 0 (= --img-size) or in {MIN_IMG_SIZE}..{MAX_IMG_SIZE}"))
    img_size_ramp: tuple[float, float] = setting((0.0, 0.75), "progressive resizing: the crops grow between these "
                                                 "fractions of the epochs", metavar=("FROM", "TO"),
                                                 check=(lambda v, c: 0 <= v[0] < v[1] <= 1, "must be two fractions "
                                                        "FROM TO with 0 <= FROM < TO <= 1"))
    val_resize: int = setting(256, "validation: short side before the centre crop; 0 = squash to size (unless the "
                              "recipe sets it: 256/224 of --img-size)",
                              check=(lambda v, c: v == 0 or c.img_size <= v <= 4096,
                                     "must be 0 (squash) or in --img-size {c.img_size}..4096"))
    tta: bool = setting(False, "validate on 10 crops (corners, centre, mirrored) per image")
    crop_scale: tuple[float, float] = setting((0.25, 1.0), "RandomResizedCrop area range", metavar=("MIN", "MAX"),
                                              check=(lambda v, c: 0 < v[0] <= v[1] <= 1, "need 0 < MIN <= MAX <= 1"))
    aug: str = setting("none", "extra augmentation after crop + flip; off: not even those (the whole image squashed "
                       "to size, never flipped: the paper's section 4.1 ablation)",
                       choices=["none", "trivialaugment", "colorjitter", "off"])
    lighting: float = setting(0.0, "PCA colour augmentation std (paper: 0.1; 0 = off)",
                              check=(lambda v, c: 0 <= v <= 1, "must be in [0, 1] (the paper: 0.1)"))
    mixup_alpha: float = setting(0.0, "MixUp: blend pairs of images and labels, Beta(alpha, alpha) (0 = off)",
                                 check=OFF_OR_POSITIVE)
    cutmix_alpha: float = setting(0.0, "CutMix: paste a patch of another image, labels by area (0 = off); with both, "
                                  "each batch gets one of the two", check=OFF_OR_POSITIVE)
    mean: tuple[float, ...] = setting(TUTORIAL_MEAN, "input normalisation (from --weights)", cli=False)
    std: tuple[float, ...] = setting(TUTORIAL_STD, "input normalisation (from --weights)", cli=False)
    balance: str = setting("auto", "class imbalance: none, sampler (each class drawn equally often: "
                           "WeightedRandomSampler), loss (class-weighted cross-entropy), or auto: loss when the "
                           "training classes are 3:1 or more apart, else none (docs/results.md)",
                           choices=["auto", "none", "sampler", "loss"])
    bad_images: str = setting("error", "unreadable images: refuse to start, or leave them out",
                              choices=["error", "skip"], on_resume=MAY_CHANGE)
    # model
    arch: str = setting("tutorial", "network width: tutorial (half), torchvision, paper (+LRN, two columns)",
                        choices=list(ARCHS))
    variant: tuple[str, ...] = setting((), "undo or add the paper's design choices, e.g. --variant tanh pool2: the "
                                       "activation (relu, tanh, sigmoid), response normalisation (lrn, no-lrn), the "
                                       "pooling window (pool3 overlapping, pool2 not), the two-GPU layout (two-column, "
                                       "one-column), a middle convolution left out (no-conv3, no-conv4); "
                                       "tools/study.py measures each", choices=list(VARIANTS), metavar="SWITCH",
                                       check=(lambda v, c: valid_variant(v), "sets one switch twice; keep one"))
    init: str = setting("arch", "arch: the tutorial's / paper's init; default: PyTorch's", choices=["arch", "default"])
    dropout: float = setting(0.5, "dropout before the two hidden FC layers", check=FRACTION)
    weights: str | None = setting(None, f"start from a checkpoint or a state_dict file, or `{IMAGENET}`: "
                                  f"torchvision's ImageNet weights (with --arch torchvision; downloaded once into "
                                  f"torch's hub cache); a new head for these classes", metavar="PATH|imagenet")
    freeze_features: bool = setting(False, "with --weights: train only the classifier")
    # optimisation
    epochs: int = setting(10, "total epochs", check=within(1, 100_000), on_resume=MAY_CHANGE)
    budget: float | None = setting(None, "train the best model that fits this wall-clock time on this machine, e.g. "
                                   "90s, 10m, 1h30m: the epochs (and crop sizes) are planned from measured costs; uses "
                                   f"the `{BUDGET_RECIPE}` recipe unless --recipe is given", metavar="DURATION")
    batch_size: int = setting(32, "images per step (per GPU with torchrun)", check=within(1, 4096))
    opt: str = setting("adamw", "optimizer (sgd: momentum 0.9, as in the paper)", choices=["adam", "adamw", "sgd"])
    lr: float = setting(1e-3, "peak learning rate; find: run the learning-rate range test (OUTPUT_DIR/lr_find.png), "
                        "print the rate it suggests and stop; auto: run it, then train with that rate",
                        check=(lambda v, c: 0 < v <= 10, "must be in (0, 10]"), metavar="LR|find|auto")
    lr_mode: str = setting("", "how --lr was chosen: given (''), or auto (the range test's suggestion, kept on "
                           "resume)", cli=False)
    momentum: float = setting(0.9, "SGD momentum", check=FRACTION)
    wd: float = setting(0.0, "weight decay", check=FRACTION)
    sched: str = setting("constant", "LR schedule (plateau: /10 when val top-1 stalls)",
                         choices=["constant", "cosine", "plateau"])
    patience: int = setting(3, "plateau: epochs without improvement before dividing the LR by 10",
                            check=within(1, 1000))
    warmup_epochs: float = setting(0.0, "linear LR warmup",
                                   check=(lambda v, c: 0 <= v <= c.epochs, "must be in [0, --epochs {c.epochs}]"))
    label_smoothing: float = setting(0.0, "cross-entropy label smoothing", check=FRACTION)
    clip_grad: float = setting(0.0, "clip the gradient norm (0 = off)", check=OFF_OR_POSITIVE)
    ema: float = setting(0.0, "validate and save an exponential moving average of the weights, updated every step "
                         "with this decay, e.g. 0.998 (0 = off); metrics.csv keeps the raw weights' top-1 too",
                         check=(lambda v, c: 0 <= v < 1, "must be in [0, 1) (0 = off, e.g. 0.998)"))
    topk: int = setting(5, "also report top-k accuracy (capped at the class count)", check=within(1, 1000),
                        on_resume=MAY_CHANGE)
    seed: int = setting(0, "seed for weights, order and augmentation (repeatable on CPU)",
                        check=(lambda v, c: 0 <= v < 2**63, "must be in 0..2**63-1"))
    # the machine: taken from the command line, also on --resume
    device: str = setting("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps", on_resume=MACHINE)
    precision: str = setting("auto", "training precision (autocast). auto: bf16 on GPUs that have it (else fp16), "
                             "bf16 on CPUs with AMX or AMD's AVX512-BF16, else fp32; a resumed run keeps its own",
                             choices=["auto", *PRECISIONS], on_resume=MACHINE)
    device_batches: str = setting("auto", "keep the decoded training images on the device and crop whole batches there "
                                  "(auto: on CUDA when they fit --device-cache-mem)", choices=["auto", "on", "off"],
                                  on_resume=MACHINE,
                                  check=(lambda v, c: v != "on" or not c.device_gaps, "batches built on the device do "
                                         "not implement {c.device_gaps}; drop one of the two"))
    device_cache_mem: float = setting(-1.0, "GiB of device memory the resident images may use (-1: a quarter of what "
                                      "is free)", on_resume=MACHINE, check=GIB_OR_AUTO)
    compile: bool = setting(False, "torch.compile the model", on_resume=MACHINE)
    workers: int = setting(-1, "DataLoader workers (-1: auto)", on_resume=MACHINE,
                           check=within(-1, 64, " (-1: automatic)"))
    val_batch_size: int = setting(0, "0: 32 on a CPU (its fastest here), 256 on a GPU", on_resume=MACHINE,
                                  check=within(0, 4096, " (0: automatic)"))
    output_dir: str = setting("runs", "where checkpoints, metrics and plots go (with --resume: the checkpoint's "
                              "folder)", on_resume=MACHINE)
    cache_dir: str = setting("", "decoded-image cache (OUTPUT_DIR/.cache unless given)", on_resume=MACHINE)
    cache_mem: float = setting(-1.0, "GiB of RAM the decoded images may use (-1: 25%% of RAM; 0: no cache)",
                               on_resume=MACHINE, check=GIB_OR_AUTO)
    quiet: bool = setting(False, "no progress bars", on_resume=MACHINE)
    tensorboard: bool = setting(False, "also log to OUTPUT_DIR/tensorboard/: metrics.csv's numbers every epoch, the "
                                "learning rate every 10 steps, the validation confusion matrix every 5 epochs, the "
                                "settings as hparams (pip install -r requirements-cluster.txt)", on_resume=MACHINE)
    overwrite: bool = setting(False, "start afresh in an output folder that holds a trained model", on_resume=MACHINE)
    resume: str | None = setting(None, "continue from a checkpoint (e.g. runs/last.pth); auto: from "
                                 "OUTPUT_DIR/last.pth when there is one, else start afresh (what a requeued cluster "
                                 "job runs)", metavar="PATH|auto", on_resume=MACHINE)

    @property
    def train_size_end(self) -> int:
        return self.img_size_end or self.img_size

    @property
    def resizing(self) -> Resizing:
        return Resizing(self.img_size_start, self.train_size_end, self.img_size_ramp)

    @property
    def eval_transform(self) -> EvalTransform:
        return EvalTransform(self.img_size, self.val_resize, self.tta)

    @property
    def device_gaps(self) -> str:
        """The settings in use that batches built on the device do not implement ('' if none):
        they crop and flip (device_data), and balance classes only through the loss."""
        gaps = [f"--aug {self.aug}"] if self.aug != "none" else []
        return ", ".join(gaps + (["--balance sampler"] if self.balance == "sampler" else []))


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
TYPES = typing.get_type_hints(Config)
RECIPE_SET = {name for values in RECIPES.values() for name in values}  # what the [recipe] marker shows
# --help's groups, the options people change most first (tests check every option is in one)
HELP_GROUPS = (
    ("data", ("data", "demo", "img_size", "balance", "bad_images")),
    ("run length", ("recipe", "epochs", "budget", "resume", "seed")),
    ("model", ("arch", "variant", "weights", "freeze_features", "dropout", "init")),
    ("optimisation", ("batch_size", "opt", "lr", "wd", "sched", "warmup_epochs", "momentum", "patience",
                      "label_smoothing", "clip_grad", "ema")),
    ("augmentation", ("crop_scale", "aug", "lighting", "mixup_alpha", "cutmix_alpha", "img_size_start",
                      "img_size_end", "img_size_ramp")),
    ("validation", ("val_resize", "tta", "topk")),
    ("machine", ("device", "precision", "workers", "val_batch_size", "compile", "device_batches",
                 "device_cache_mem", "cache_mem", "cache_dir")),
    ("output", ("output_dir", "overwrite", "quiet", "tensorboard")),
)


def on_resume(name: str) -> str:
    return FIELDS[name].metadata["on_resume"]


# ---------------------------------------------------------------- the command line
def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def shown(value) -> str:
    """A value as it is typed on the command line."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def is_unset(value) -> bool:
    """None, off or empty: an option that does nothing unless given (0 is a value: --seed 0)."""
    return value is None or value is False or value == "" or value == ()


def help_defaults(name: str, recipe_configs: dict[str, "Config"]) -> str:
    """' (default: 0.001; tutorial: 0.0002, paper: 0.01)': the value each recipe's resolved
    config uses, the default recipe's first and the recipes that differ from it after."""
    if name == "recipe":
        return f" (default: {DEFAULT_RECIPE}; with --budget: {BUDGET_RECIPE})"
    values = {r: getattr(c, name) for r, c in recipe_configs.items()}
    base = values[DEFAULT_RECIPE]
    others = [f"{r}: {shown(v)}" for r, v in values.items() if v != base]
    if not others and is_unset(base):
        return ""
    return f" (default: {shown(base)}" + (f"; {'; '.join(others)}" if others else "") + ")"


def get_args_parser() -> argparse.ArgumentParser:
    """One option per declared setting, in the groups of HELP_GROUPS. Every option defaults
    to None, meaning "not given": ``resolve_config`` fills it."""
    p = OneLineParser(description="Train AlexNet on an ImageFolder. Options marked [recipe] are set by the "
                                  "--recipe; each shows every recipe's value that differs from the default.",
                      argument_default=None)
    recipe_configs = {r: build_config(fresh_values({"recipe": r}), {"recipe": r}) for r in RECIPES}
    for title, names in HELP_GROUPS:
        group = p.add_argument_group(title)
        for name in names:
            add_option(group, name, recipe_configs)
    return p


def add_option(group, name: str, recipe_configs: dict[str, Config]) -> None:
    """The option of one setting: its type, choices, help and every recipe's value."""
    meta = FIELDS[name].metadata
    kind = TYPES[name]
    text = meta["help"] + (" [recipe]" if name in RECIPE_SET else "") + help_defaults(name, recipe_configs)
    kwargs = dict(help=text, choices=meta["choices"], metavar=meta["metavar"])
    if kind is bool:
        kwargs |= dict(action=argparse.BooleanOptionalAction if name in RECIPE_SET else "store_true", default=None)
        kwargs.pop("choices"), kwargs.pop("metavar")
    elif typing.get_origin(kind) is tuple:
        items = typing.get_args(kind)
        kwargs |= dict(type=items[0], nargs="+" if items[-1] is Ellipsis else len(items))
    elif name == "lr":
        kwargs |= dict(type=learning_rate)
    elif kind in (int, float):
        kwargs |= dict(type=kind)
    group.add_argument(option(name), **kwargs)


def learning_rate(text: str) -> float | str:
    """--lr: a number, or one of LR_MODES."""
    if text in LR_MODES:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number, {' or '.join(LR_MODES)}") from None


# ---------------------------------------------------------------- settings, resolved once
def resolve_config(args: argparse.Namespace) -> tuple[Config, dict | None]:
    """The run's Config (and the checkpoint to resume, if any) from the parsed command line."""
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items() if v is not None}
    if "budget" in given and "epochs" in given:
        raise ArgumentError(f"--budget {given['budget']} and --epochs {given['epochs']}: give one of the two "
                            f"(a budget plans the epochs itself)")
    if "budget" in given:
        given["budget"] = parse_duration(given["budget"])
    if given.get("lr") in LR_MODES:
        given["lr_mode"] = given.pop("lr")
    if given.get("resume") == "auto":
        last = Path(given.get("output_dir", FIELDS["output_dir"].default)) / "last.pth"
        if os.path.lexists(last):
            given["resume"] = str(last)
        else:
            del given["resume"]
    if given.get("resume"):
        values, resume = resumed_values(given)
    else:
        values, resume = fresh_values(given), None
    cfg = build_config(values, given)
    planned = resume["plan"].get("epochs", cfg.epochs) if resume and cfg.budget else cfg.epochs
    if resume is not None and resume["epoch"] >= planned:
        raise ArgumentError(f"--resume {cfg.resume}: already trained {resume['epoch']} of {planned} epochs"
                            + ("; its --budget is spent" if cfg.budget else "; pass a larger --epochs to train on"))
    return cfg, resume


def fresh_values(given: dict) -> dict:
    """A new run: the recipe (--budget's by default), --demo's settings, then the command line."""
    if given.get("demo") and "data" in given:
        raise ArgumentError(f"--demo trains on its own generated {DEMO_DATA}; it never writes into "
                            f"--data {given['data']}: drop one of the two")
    recipe = given.get("recipe", BUDGET_RECIPE if "budget" in given else DEFAULT_RECIPE)
    values = RECIPES[recipe] | {"recipe": recipe} | (DEMO | {"data": DEMO_DATA} if given.get("demo") else {})
    return values | given | weights_values(given)


def build_config(values: dict, given: dict) -> Config:
    """The settings that follow from others (sizes relative to --img-size, the cache folder), then checked."""
    values = dict(values)
    if values.get("img_size_end") == -1:
        values["img_size_end"] = max(MIN_IMG_SIZE, round(values.get("img_size", 224) * 6 / 7 / 16) * 16)
    final = values.get("img_size_end") or values.get("img_size", FIELDS["img_size"].default)
    if "img_size_start" not in given and values.get("img_size_start", 0) >= final:
        values["img_size_start"] = 0  # the recipe's small first crops are not small at this --img-size
    if values.get("val_resize") is None:
        values["val_resize"] = eval_resize(values.get("img_size", FIELDS["img_size"].default))
    values["cache_dir"] = values.get("cache_dir") or str(Path(values.get("output_dir", "runs")) / ".cache")
    cfg = Config(**values)
    check_ranges(cfg)
    return cfg


def check_ranges(cfg: Config) -> None:
    """Every declared check, before any work: one line naming the option and what it allows."""
    for name, f in FIELDS.items():
        value = getattr(cfg, name)
        numbers = value if isinstance(value, tuple) else (value,)
        if TYPES[name] is float and not all(math.isfinite(v) for v in numbers):
            raise ArgumentError(f"{option(name)} {shown(value)}: must be a finite number")
        check = f.metadata["check"]
        if check and not check[0](value, cfg):
            raise ArgumentError(f"{option(name)} {shown(value)}: {check[1].format(c=cfg)}")


def resumed_values(given: dict) -> tuple[dict, dict]:
    """--resume: the checkpoint's settings, the machine's from the command line, and the few
    that may change (MAY_CHANGE); any other option that differs is refused by name."""
    path = given["resume"]
    ckpt = load_checkpoint(path)
    if "config" not in ckpt or "optimizer" not in ckpt:
        raise CheckpointError(f"{path}: a bare state_dict cannot be resumed (use --weights to start from it)")
    check_resumable(ckpt, path, TYPES)
    mode = given.pop("lr_mode", "")
    if mode and (mode == "find" or ckpt["config"].get("lr_mode") != mode):
        # --lr auto --resume auto is a requeued job's command line: the run goes on with the rate it found
        raise ArgumentError(f"--lr {mode}: {path} trains with --lr {ckpt['config'].get('lr')}, which a resumed run "
                            f"keeps; drop --lr {mode}")
    saved = {k: (tuple(v) if isinstance(v, list) else v) for k, v in ckpt["config"].items()
             if k in FIELDS and on_resume(k) != MACHINE}
    if saved.get("budget") and "epochs" in given:
        raise ArgumentError(f"--epochs {given['epochs']}: {path} is a --budget run; it resumes its own plan")
    changed = [k for k, v in given.items() if on_resume(k) == KEPT and saved.get(k) != v]
    if changed:
        names = ", ".join(option(k) for k in sorted(changed))
        raise ArgumentError(f"--resume {path}: {names} cannot change in a resumed run (it continues with the "
                            f"checkpoint's settings); drop {'them' if len(changed) > 1 else 'it'}, or start a new "
                            f"run from these weights with --weights {path}")
    values = saved | {k: v for k, v in given.items() if on_resume(k) != KEPT}
    values["output_dir"] = given.get("output_dir") or str(Path(path).parent)
    check_no_later_epochs(path, ckpt["epoch"], Path(values["output_dir"]) / "last.pth")
    return values, ckpt


def weights_values(given: dict) -> dict:
    """--weights decides the arch and the input statistics: a checkpoint of ours records
    its own, torchvision's ImageNet weights expect ImageNet's."""
    if not given.get("weights"):
        return {}
    ckpt = load_weights(given["weights"], mmap=True)
    if "arch" in given and given["arch"] != ckpt["arch"]:
        raise ArgumentError(f"--arch {given['arch']}: {given['weights']} holds an AlexNet of arch {ckpt['arch']!r}")
    variant = variant_of(ckpt["arch"], ckpt["net"])
    given_variant = given.get("variant", variant)  # one that sets a switch twice: its declared check names it
    if valid_variant(given_variant) and switches_of(given_variant) != switches_of(variant):
        raise ArgumentError(f"--variant {shown(given_variant)}: {given['weights']} holds an AlexNet of variant "
                            f"{shown(variant) or 'none'} (its layers decide)")
    return {"arch": ckpt["arch"], "variant": given_variant, "mean": tuple(ckpt.get("mean", IMAGENET_MEAN)),
            "std": tuple(ckpt.get("std", IMAGENET_STD))}


# what command_line leaves out: the run's place (--resume, --overwrite unless asked) and what follows from others
NOT_REPEATED = ("resume", "overwrite", "cache_dir", "quiet")


def command_line(cfg: Config, **changes) -> str:
    """The train.py command that repeats this run (every setting that differs from its
    recipe's), with ``changes`` applied (None drops an option): the advice printed after a
    run, a command that works as it is."""
    plain = {"recipe": cfg.recipe, "demo": cfg.demo}
    base = build_config(fresh_values(plain | {"img_size": cfg.img_size}), {})  # what follows from --img-size too
    values = {name: getattr(cfg, name) for name in FIELDS if name not in NOT_REPEATED and FIELDS[name].metadata["cli"]
              and getattr(cfg, name) != getattr(base, name)}
    if cfg.img_size != fresh_values(plain).get("img_size", FIELDS["img_size"].default):
        values = {"img_size": cfg.img_size} | values
    if cfg.recipe != (BUDGET_RECIPE if cfg.budget else DEFAULT_RECIPE):
        values["recipe"] = cfg.recipe
    if cfg.demo:
        values = {"demo": True} | values
    values.pop("budget", None)  # an old checkpoint's 0.0 means none: "--budget 0.0" would be refused
    if cfg.budget:
        values["budget"] = f"{cfg.budget:g}s"
    values |= changes
    words = ["python", "train.py"]
    for name, value in values.items():
        if value is None or value is False:
            continue
        words.append(option(name))
        if value is not True:
            words += [str(v) for v in value] if isinstance(value, (tuple, list)) else \
                [f"{value:.2g}" if isinstance(value, float) and name == "lr" else str(value)]
    return shlex.join(words)

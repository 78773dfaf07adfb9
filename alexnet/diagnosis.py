"""Why a run did not learn, read off what it measured: the per-epoch losses and top-1 of
both splits, the highest step loss of each epoch, the images per class and the validation
photos that copy training photos (found at the start, loaders.py). train.py prints the
findings at the end of every run, and on a run stopped as diverged, and writes them to
OUTPUT_DIR/diagnosis.json; a healthy run gets none.

    python train.py --lr 1e-6 --epochs 3      # ends with: diagnosis (lr_too_low): not learning, the learning rate ...
    python -c "import json; print(json.load(open('runs/diagnosis.json'))['findings'])"

Each finding names its cause, its evidence and one command to run next. The thresholds were
set on the flowers: the planted failures and healthy runs of docs/diagnosis.md, and the runs
of its learning-rate grid (tools/plant_failures.py, tools/lr_study.sh).
"""
import json
import math
from dataclasses import asdict, dataclass

from pathlib import Path

from alexnet import outputs
from alexnet.loaders import Loaders
from alexnet.machine import Machine
from alexnet.settings import Config, command_line

LEARNED = 0.1  # validation top-1 this far above the largest class's share: the run learned something
MEMORISING = 0.2  # training top-1 this far above the largest class's share while validation is not: it memorises
HIGH_PEAK = 2.0  # a step loss over this many times ln(classes): the loss jumped
# a loss that stays at ln(classes) but whose steps once passed this many times it was knocked there (a collapse)
# rather than creeping from it: creeping runs peaked at 1.02x at most, collapsed ones at 1.07-1.24x (docs/diagnosis.md)
WOBBLE = 1.05
STILL = 0.02  # a training loss that moved less than this share of ln(classes) over the run: it barely moved
OVERFIT_RISE = 0.1  # validation loss this share above its lowest, at the end: it rose
OVERFIT_EPOCHS = 2  # ... for at least this many epochs after its lowest
OVERFIT_FLOOR = 0.05  # ... and by at least this share of ln(classes): a rise from 0.0001 to 0.0002 is none
FEW_IMAGES = 100  # fewer training photos than this in a class: too few to train AlexNet from scratch
# a run that did not learn but took fewer optimizer steps than this, or has fewer photos than this in a class,
# says nothing about its learning rate or its labels: its loss barely moves at any rate (200 classes of 2 photos
# for 2 epochs was "too low" at 1e-3 and "too high" at 1e-2), the range test itself takes up to 100 steps, and
# 2 flower photos a class were memorised as if mislabelled (docs/diagnosis.md)
LR_EVIDENCE_STEPS, LR_EVIDENCE_PHOTOS = 50, 5
GOOD_TOP1 = 0.9  # a run this good has no problem worth naming for its few photos
COPIED = 0.05  # this share of validation photos copies training photos: validation measures memory
MIRROR_TOP1, MIRROR_MIN_VAL = 0.98, 50  # top-1 this high after one epoch, on at least this many photos


@dataclass(frozen=True)
class Finding:
    # diverged, lr_too_high, lr_too_low, lr_or_labels, labels, too_small, not_learning, few_images, overfitting, mirror
    cause: str
    text: str  # what was seen and what it means, with the numbers
    command: str  # the one thing to run next


@dataclass(frozen=True)
class Evidence:
    """What a run measured, as diagnose() reads it."""
    history: list  # metrics.csv's rows
    num_classes: int
    counts: list  # training photos per class
    val_counts: list  # validation photos per class
    copies: int  # validation photos that are copies (byte for byte or resized) of training photos
    data: str
    lr: float
    recipe: str
    aug: str  # --aug: the overfitting advice tries what the run has not
    fine_tuned: bool  # started from --weights
    diverged: str = ""  # the stop message of a run whose loss exploded
    steps: int = 0  # optimizer steps the run took (0: not known)
    lr_mode: str = ""  # "auto": the rate came from the range test (--lr auto)
    budget: float = 0.0  # --budget's seconds, or 0


def diagnose(ev: Evidence, command) -> list[Finding]:
    """The findings, most fundamental first. ``command(**changes)`` is the run's own command
    line with some options changed (settings.command_line)."""
    findings = []
    if ev.diverged:
        findings.append(Finding("diverged", f"the loss exploded ({ev.diverged}): the learning rate {ev.lr:g} is "
                                f"too high for this model and data",
                                command(lr=ev.lr / 10, overwrite=True)))
    mirror = mirrored(ev)
    if mirror:
        findings.append(mirror)
    if ev.history:
        stuck = not_learning(ev, command)
        if stuck:
            findings.append(stuck)
        few = too_few(ev, command)
        if few:
            findings.append(few)
        if not stuck:
            over = overfitting(ev, command)
            if over:
                findings.append(over)
    return findings


def not_learning(ev: Evidence, command) -> Finding | None:
    """Validation near chance at its best: labels that do not match the images (training
    top-1 rose, validation did not), the learning rate too high (the loss jumped), the
    learning rate too low (the loss barely moved), or none of these."""
    rows = ev.history
    total = max(sum(ev.val_counts), 1)
    majority = max(ev.val_counts) / total
    best_val = max(r["val_top1"] for r in rows)
    # near chance: within LEARNED, or two standard errors of a guess's top-1 on this few photos
    if best_val > majority + max(LEARNED, 2 * math.sqrt(majority * (1 - majority) / total)):
        return None
    blind = math.log(ev.num_classes)
    chance = max(ev.counts) / max(sum(ev.counts), 1)  # what always naming the largest class scores
    seen = (f"validation top-1 at best {best_val:.3f} (the largest class is {majority:.3f} of it), training loss "
            f"{rows[0]['train_loss']:.3f} -> {rows[-1]['train_loss']:.3f} over {len(rows)} epoch(s) "
            f"(ln {ev.num_classes} classes = {blind:.3f}, a blind guess)")
    if (0 < ev.steps < LR_EVIDENCE_STEPS) or min(ev.counts) < LR_EVIDENCE_PHOTOS:
        return Finding("too_small", f"not learning, and the run is too small to tell why: {seen}, in {ev.steps} "
                       f"steps on {min(ev.counts)} photo(s) in its smallest class. So few steps move the loss little "
                       f"at any learning rate, and so few photos are memorised whatever their labels: neither the "
                       f"rate nor the labels are the question, the photos are (more of them, or fine-tuning), then "
                       f"a longer run", f"python data_set/check.py {ev.data}")
    # memorising: training top-1 far above chance (the rate was low enough to fit the training photos, whatever its
    # jumps), held in the two best epochs beyond two standard errors; or, slower, the training loss falling below a
    # blind guess's while the validation loss rises (shuffled labels on the flowers: docs/diagnosis.md)
    best_two = sorted((r["train_acc"] for r in rows), reverse=True)[:2]
    train_top1 = sum(best_two) / len(best_two)
    low_val = min(r["val_loss"] for r in rows)
    if train_top1 > chance + max(MEMORISING, 2 * math.sqrt(chance * (1 - chance) / max(sum(ev.counts), 1))):
        how = (f"training top-1 rose to {train_top1:.3f} in its two best epochs (the largest class: {chance:.3f})")
    elif rows[-1]["train_loss"] < (1 - STILL) * blind and rows[-1]["val_loss"] - low_val >= OVERFIT_FLOOR * blind:
        how = (f"training loss fell below a blind guess's to {rows[-1]['train_loss']:.3f} as validation loss rose "
               f"{low_val:.3f} -> {rows[-1]['val_loss']:.3f}")
    else:
        how = ""
    if how:
        return Finding("labels", f"not learning what generalises, the labels may not match the images: {seen}, while "
                       f"{how}: the model memorises the training photos and nothing carries over. Look for "
                       f"mislabelled photos", f"python data_set/label_issues.py {ev.data}")
    peak = max(r.get("step_loss_max", 0.0) for r in rows)
    if ev.lr_mode == "auto":  # the range test chose this rate: its loss fell there, so calling it too low or
        # too high contradicts the test the run just did
        return Finding("not_learning", f"not learning at the rate the range test chose (--lr auto, {ev.lr:g}): "
                       f"{seen}. The test's loss fell at that rate: train longer, and check the data "
                       f"(python data_set/check.py {ev.data})", longer(ev, command))
    if peak > HIGH_PEAK * blind:
        return Finding("lr_too_high", f"not learning, the learning rate {ev.lr:g} is too high: {seen}; a step loss "
                       f"jumped to {peak:.3g}, {peak / blind:.1f}x a blind guess's",
                       command(lr=ev.lr / 10, overwrite=True))
    still = len(rows) >= 2 and abs(rows[0]["train_loss"] - rows[-1]["train_loss"]) < STILL * blind
    if still and peak > WOBBLE * blind:  # a collapse, or labels with no signal: a healthy run's first steps
        # also reach 5-10% over a blind guess's loss, so the two cannot be told apart from the curves
        return Finding("lr_or_labels", f"not learning: {seen}; the loss sits at a blind guess's after a step loss "
                       f"of {peak:.3g} ({peak / blind:.2f}x it). Either the learning rate {ev.lr:g} is too high and "
                       f"the network collapsed to one answer, or the labels carry no signal. The range test tells "
                       f"them apart: a loss that falls at some rate means the labels carry signal, and its "
                       f"suggestion is the rate to use", command(lr="find", overwrite=None))
    if still:
        return Finding("lr_too_low", f"not learning, the learning rate {ev.lr:g} is too low: {seen}; the loss barely "
                       f"moved (less than {STILL:.0%} of a blind guess's)", command(lr=ev.lr * 10, overwrite=True))
    return Finding("not_learning", f"not learning: {seen}. Try a range of learning rates (--lr find) and check the "
                   f"data (python data_set/check.py {ev.data})", command(lr="find", overwrite=None))


def longer(ev: Evidence, command) -> str:
    """The run's command with four times its length: its budget, or its epochs."""
    if ev.budget:
        return command(budget=f"{4 * ev.budget:g}s", overwrite=True)
    return command(epochs=4 * len(ev.history), overwrite=True)


def too_few(ev: Evidence, command) -> Finding | None:
    """Fewer than FEW_IMAGES photos in a class of a run from scratch that did not do well."""
    fewest = min(ev.counts)
    best_val = max(r["val_top1"] for r in ev.history)
    if fewest >= FEW_IMAGES or ev.fine_tuned or best_val >= GOOD_TOP1:
        return None
    return Finding("few_images", f"too few photos to train AlexNet from scratch: {fewest} in the smallest class "
                   f"({sum(ev.counts)} in all; ImageNet gave AlexNet 1300 per class for its millions of weights). "
                   f"Fine-tune torchvision's ImageNet weights instead, or let --recipe budget augment harder",
                   command(weights="imagenet", arch="torchvision", variant=None, lr=None, overwrite=True))


def overfitting(ev: Evidence, command) -> Finding | None:
    """Validation loss rising for OVERFIT_EPOCHS or more epochs after its lowest, by
    OVERFIT_RISE, while the training loss went on falling."""
    rows = ev.history
    low = min(range(len(rows)), key=lambda i: rows[i]["val_loss"])
    after = rows[low + 1:]
    rise = rows[-1]["val_loss"] - rows[low]["val_loss"]
    if len(after) < OVERFIT_EPOCHS or rise < max(OVERFIT_RISE * rows[low]["val_loss"],
                                                 OVERFIT_FLOOR * math.log(ev.num_classes)):
        return None
    if rows[-1]["train_loss"] >= rows[low]["train_loss"]:
        return None
    best = max(rows, key=lambda r: r["val_top1"])
    when = "the best before it rose" if best["epoch"] <= rows[low]["epoch"] else \
        "chosen by top-1, which went on creeping up as the probabilities grew overconfident"
    if ev.aug == "off":
        next_command = command(aug=None, overwrite=True)
    elif ev.aug == "none":
        next_command = command(aug="trivialaugment", overwrite=True)
    elif ev.recipe != "long":
        next_command = command(recipe="long", overwrite=True)
    else:
        next_command = command(weights="imagenet", arch="torchvision", variant=None, lr=None, overwrite=True)
    return Finding("overfitting", f"overfitting from epoch {rows[low]['epoch'] + 1}: validation loss rose "
                   f"{rows[low]['val_loss']:.3f} -> {rows[-1]['val_loss']:.3f} while training loss fell "
                   f"{rows[low]['train_loss']:.3f} -> {rows[-1]['train_loss']:.3f}; best.pth holds epoch "
                   f"{best['epoch']} (top-1 {best['val_top1']:.3f}), {when}. Try stronger augmentation (--aug "
                   f"trivialaugment), the long recipe, more photos, or fine-tuning (--weights imagenet --arch "
                   f"torchvision)", next_command)


def mirrored(ev: Evidence) -> Finding | None:
    """Validation photos that copy training photos, or a top-1 near 100% after one epoch."""
    total = sum(ev.val_counts)
    check = f"python data_set/check.py {ev.data}"
    if total and ev.copies >= max(1, COPIED * total):
        return Finding("mirror", f"validation mirrors training: {ev.copies} of {total} validation photos are copies "
                       f"(byte for byte or resized) of training photos, so validation top-1 measures memory, not "
                       f"generalisation. Find and remove them", check)
    first = ev.history[0]["val_top1"] if ev.history else 0.0
    if total >= MIRROR_MIN_VAL and first >= MIRROR_TOP1:
        return Finding("mirror", f"validation may mirror training: top-1 {first:.3f} on {total} photos after one "
                       f"epoch. Check the split for shared or resized photos", check)
    return None


def report(findings: list[Finding]) -> list[str]:
    """The lines train.py prints: none for a healthy run."""
    return [line for f in findings for line in (f"diagnosis ({f.cause}): {f.text}", f"  next: {f.command}")]


def write(findings: list[Finding], ev: Evidence, path) -> None:
    evidence = {k: v for k, v in asdict(ev).items() if k != "history"}
    outputs.write_text(path, json.dumps({"findings": [asdict(f) for f in findings], "evidence": evidence},
                                        indent=2, ensure_ascii=False) + "\n")


def report_run(cfg: Config, machine: Machine, loaders: Loaders, history: list[dict], diverged: str = "") -> None:
    """train.py's end of run: the findings printed, and OUTPUT_DIR/diagnosis.json (rank 0)."""
    if not machine.is_main:
        return
    evidence = Evidence(history=history, num_classes=len(loaders.classes), counts=loaders.counts,
                        val_counts=loaders.val_counts, copies=loaders.copies, data=cfg.data, lr=cfg.lr,
                        recipe=cfg.recipe, aug=cfg.aug, fine_tuned=bool(cfg.weights), diverged=diverged,
                        steps=len(history) * len(loaders.train), lr_mode=cfg.lr_mode or "", budget=cfg.budget or 0.0)
    findings = diagnose(evidence, lambda **changes: command_line(cfg, **changes))
    for line in report(findings):
        machine.log(line)
    write(findings, evidence, Path(cfg.output_dir) / "diagnosis.json")

"""Every command the tools print as advice runs when pasted: each `next:` line of the
diagnosis, --lr find's "train with it", the resume hint of a stopped run, and the advice after
resuming every checkpoint format that shipped. Each comes from a real situation (a real run's
settings, a folder that holds a model) and is parsed by train.py and started up to its first
training step, or, for the data tools, parsed by their own parsers."""
import shlex
import shutil
from pathlib import Path

import pytest
import torch

import check
import label_issues
import train
from alexnet import diagnosis, lr_finder, preemption, settings
from alexnet.errors import OutputError
from checkpoint_fixtures import fixtures, inflate
from conftest import train_args, use_hub_cache
from test_diagnosis import rows


class FirstStep(Exception):
    """Raised by train.py's training step once it has run: the command started."""


def starts(command: str, monkeypatch) -> None:
    """A printed ``python train.py ...`` command, run in-process until its first training step
    (for --budget, the step its plan times; for --lr find, the range test's first)."""
    words = shlex.split(command)
    assert words[:2] == ["python", "train.py"], command
    step = train.train_step

    def first_step(*args):
        step(*args)
        raise FirstStep

    with monkeypatch.context() as m:
        m.setattr(train, "train_step", first_step)
        with pytest.raises(FirstStep):
            train.main(train.get_args_parser().parse_args(words[2:]))


def runs(command: str, monkeypatch) -> None:
    """A command of the diagnosis: train.py's is started, a data tool's parsed by its own parser."""
    words = shlex.split(command)
    if words[1] == "train.py":
        return starts(command, monkeypatch)
    tool = {"data_set/check.py": check, "data_set/label_issues.py": label_issues}[words[1]]
    args = tool.get_args_parser().parse_args(words[2:])
    assert (Path(args.data) / "train").is_dir(), command


def holding_a_model(trained, folder):
    """An output folder that holds a trained model, as after an earlier run."""
    folder.mkdir()
    for name in ("best.pth", "last.pth"):
        shutil.copy(trained[0] / name, folder / name)
    return folder


def every_finding(cfg: settings.Config, colour_data) -> list[diagnosis.Finding]:
    """Evidence for each cause the diagnosis knows, read with ``cfg``'s command line."""
    base = dict(num_classes=3, counts=[500] * 3, val_counts=[60] * 3, copies=0, data=str(colour_data), lr=cfg.lr,
                recipe=cfg.recipe, aug="none", fine_tuned=False, steps=600, budget=cfg.budget or 0.0)
    crept = rows((1.10, 0.33, 1.1, 0.33, 1.11), (1.099, 0.33, 1.1, 0.33, 1.11), (1.098, 0.33, 1.1, 0.33, 1.11))
    collapsed = rows((1.12, 0.33, 1.1, 0.33, 1.3), (1.099, 0.33, 1.1, 0.33, 1.12), (1.10, 0.33, 1.1, 0.33, 1.13))
    memorised = rows((1.1, 0.33, 1.1, 0.33, 1.3), (0.9, 0.6, 1.3, 0.33, 1.2), (0.5, 0.9, 1.6, 0.33, 1.0))
    wandered = rows((1.1, 0.33, 1.1, 0.33, 1.3), (1.0, 0.4, 1.1, 0.34, 1.2), (0.95, 0.45, 1.1, 0.34, 1.1))
    overfit = rows((1.0, 0.5, 0.9, 0.6, 1.3), (0.7, 0.7, 0.6, 0.8, 1.0), (0.4, 0.85, 0.75, 0.8, 0.8),
                   (0.2, 0.95, 0.95, 0.79, 0.5))
    cases = [dict(history=crept, diverged="loss is nan at epoch 1 step 3"),
             dict(history=rows((3.0, 0.33, 1.1, 0.33, 9.0), (1.1, 0.33, 1.1, 0.33, 1.2))),  # a step loss jumped
             dict(history=crept), dict(history=collapsed), dict(history=memorised), dict(history=wandered),
             dict(history=crept, counts=[2] * 3), dict(history=crept, lr_mode="auto"),
             dict(history=overfit), dict(history=overfit, aug="trivialaugment"),
             dict(history=overfit, aug="trivialaugment", recipe="long"), dict(history=overfit, copies=60)]
    command = lambda **changes: settings.command_line(cfg, **changes)  # noqa: E731
    return [f for case in cases for f in diagnosis.diagnose(diagnosis.Evidence(**base | case), command)]


@pytest.mark.slow
@pytest.mark.parametrize("length", [[], ["--budget", "30s"]], ids=["epochs", "budget"])
def test_every_next_command_of_the_diagnosis_starts(length, trained, colour_data, hub_cache, tmp_path, monkeypatch):
    use_hub_cache(hub_cache, monkeypatch)  # --weights imagenet, offline
    out = holding_a_model(trained, tmp_path / "run")
    argv = train_args(colour_data, out, *length)
    if length:  # a budget plans its own epochs
        at = argv.index("--epochs")
        del argv[at:at + 2]
    cfg = settings.resolve_config(train.get_args_parser().parse_args(argv))[0]
    found = every_finding(cfg, colour_data)
    assert {f.cause for f in found} == {"diverged", "lr_too_high", "lr_too_low", "lr_or_labels", "labels",
                                        "not_learning", "too_small", "few_images", "overfitting", "mirror"}
    for command in dict.fromkeys(f.command for f in found):  # each distinct command once
        runs(command, monkeypatch)


@pytest.mark.slow
def test_lr_find_says_its_suggestion_on_a_full_disk_and_how_to_train_in_a_folder_with_a_model(
        trained, colour_data, tmp_path, monkeypatch, capsys):
    out = holding_a_model(trained, tmp_path / "run")

    def full_disk(found, path):
        raise OutputError(f"{path}: cannot write it (No space left on device)")

    monkeypatch.setattr(lr_finder, "plot", full_disk)
    capsys.readouterr()
    assert train.cli(train_args(colour_data, out, "--lr", "find")) == 2
    captured = capsys.readouterr()
    assert "No space left on device" in captured.err and "suggested --lr" in captured.out
    advice = next(line for line in captured.out.splitlines() if line.startswith("train with it: "))
    assert advice.endswith(" --overwrite")  # the folder holds a model: without it the command is refused
    starts(advice.removeprefix("train with it: "), monkeypatch)
    # a fresh folder, --overwrite given: the advice keeps it
    cfg = settings.resolve_config(train.get_args_parser().parse_args(
        train_args(colour_data, tmp_path / "fresh", "--lr", "find", "--overwrite")))[0]
    assert settings.command_line(cfg, lr=1e-3, overwrite=True).endswith("--lr 0.001 --overwrite")


@pytest.mark.slow
def test_the_resume_hint_of_a_stopped_run_starts(trained, colour_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    ckpt = torch.load(trained[0] / "last.pth", weights_only=True)  # as if stopped after its first epoch
    torch.save(ckpt | {"epoch": 1, "metrics": ckpt["metrics"][:1]}, out / "last.pth")
    cfg = settings.resolve_config(train.get_args_parser().parse_args(train_args(colour_data, out)))[0]
    hint = preemption.how_to_go_on(cfg, saved_epoch=1, saved_steps=0, best_epoch=1, diverged=False)
    starts(hint.split("resume with  ")[1], monkeypatch)


@pytest.mark.parametrize("fixture", fixtures(), ids=lambda path: path.stem)
def test_the_advice_after_resuming_every_shipped_checkpoint_is_accepted(fixture, colour_data, hub_cache, tmp_path,
                                                                        monkeypatch):
    """An old checkpoint's settings (a budget of 0.0 meant none) must not reach the advice."""
    use_hub_cache(hub_cache, monkeypatch)  # the few_images advice names --weights imagenet
    path = tmp_path / "last.pth"
    torch.save(inflate(torch.load(fixture, weights_only=True)), path)
    cfg = settings.resolve_config(train.get_args_parser().parse_args(
        ["--resume", str(path), "--data", str(colour_data), "--epochs", "2"]))[0]
    for command in dict.fromkeys(f.command for f in every_finding(cfg, colour_data)):
        words = shlex.split(command)
        if words[1] == "train.py":
            settings.resolve_config(train.get_args_parser().parse_args(words[2:]))  # raises if refused

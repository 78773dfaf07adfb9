"""config.py: the command line, --help, the range checks and the resume rules come from
one declaration per setting; every checkpoint format that shipped still loads and resumes."""
import re

import pytest
import torch

from alexnet import settings
from alexnet import checkpoint
from model import AlexNet
import predict
import train
from checkpoint_fixtures import fixtures, inflate
from conftest import run_train
from alexnet.errors import ArgumentError, CheckpointError

STATED = re.compile(r"\(default: ([^;()]*)((?:; [^;()]*)*)\)$")


def stated_defaults(help_text: str) -> dict[str, str] | None:
    """'... (default: 0.001; tutorial: 0.0002; paper: 0.01)' -> {"": "0.001", "tutorial": "0.0002", ...}"""
    match = STATED.search(help_text)
    if match is None:
        return None
    others = [part.split(": ", 1) for part in match.group(2).split("; ")[1:]]
    return {"": match.group(1)} | dict(others)


@pytest.mark.parametrize("recipe", sorted(settings.RECIPES))
def test_each_options_help_default_is_what_the_resolved_config_uses(recipe):
    cfg, _ = settings.resolve_config(train.get_args_parser().parse_args(["--recipe", recipe]))
    for action in train.get_args_parser()._actions:
        if action.dest in ("help", "recipe"):
            continue
        value = getattr(cfg, action.dest)
        stated = stated_defaults(action.help)
        if stated is None:  # no default shown: the option is off unless given
            assert settings.is_unset(value), action.dest
            continue
        assert stated.get(recipe, stated[""]) == settings.shown(value), (action.dest, recipe, action.help)
        assert ("[recipe]" in action.help) == (action.dest in settings.RECIPE_SET), action.dest


def test_help_names_the_recipes_that_differ_and_the_budget_recipe(capsys):
    with pytest.raises(SystemExit):
        train.get_args_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--dropout DROPOUT dropout before the two hidden FC layers [recipe] (default: 0.5; budget: 0.25)" in text
    assert f"uses the `{settings.BUDGET_RECIPE}` recipe unless --recipe is given" in text
    val_resize = next(a.help for a in train.get_args_parser()._actions if a.dest == "val_resize")
    assert val_resize.count("(default:") == 1 and val_resize.endswith("(default: 256; tutorial: 0)")
    assert "--tta, --no-tta" in text and "(default: off; paper: on)" in text
    assert "--seed SEED seed for weights, order and augmentation (repeatable on CPU) (default: 0)" in text


def test_recipes_and_the_demo_only_set_declared_options():
    for values in [*settings.RECIPES.values(), settings.DEMO]:
        assert set(values) <= set(settings.FIELDS)
    for recipe, values in settings.RECIPES.items():  # a recipe lists only what differs from the declared default
        assert all(v != settings.FIELDS[k].default for k, v in values.items()), recipe


def test_help_shows_every_option_once_in_its_group(capsys):
    options = [n for n, f in settings.FIELDS.items() if f.metadata["cli"]]
    grouped = [n for _, names in settings.HELP_GROUPS for n in names]
    assert sorted(grouped) == sorted(options)
    with pytest.raises(SystemExit):
        train.get_args_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    titles = [t for t, _ in settings.HELP_GROUPS]
    assert [line[:-1] for line in text.splitlines() if line[:-1] in titles] == titles  # in this order
    body = text[text.index("\ndata:"):]  # after the usage lines
    assert body.index("\n  --data ") < body.index("\nrun length:") < body.index("\n  --epochs ") < body.index("\nmodel:")
    assert settings.DEFAULT_RECIPE in settings.RECIPES and settings.BUDGET_RECIPE in settings.RECIPES


def test_every_declared_check_names_its_option():
    for argv, line in ((["--lr", "0"], "--lr 0.0: must be in (0, 10]"),
                       (["--dropout", "nan"], "--dropout nan: must be a finite number"),
                       (["--crop-scale", "0.9", "0.2"], "--crop-scale 0.9 0.2: need 0 < MIN <= MAX <= 1"),
                       (["--epochs", "2", "--warmup-epochs", "3"], "--warmup-epochs 3.0: must be in [0, --epochs 2]"),
                       (["--img-size", "96", "--img-size-start", "128"],
                        "--img-size-start 128: must be 0 (off) or in 63..96 (the final training size)")):
        with pytest.raises(ArgumentError) as e:
            settings.resolve_config(train.get_args_parser().parse_args(argv))
        assert str(e.value) == line


@pytest.mark.slow
@pytest.mark.parametrize("fixture", fixtures(), ids=lambda path: path.stem)
def test_every_checkpoint_format_that_shipped_predicts_and_resumes(fixture, colour_data, tmp_path, capsys):
    old = inflate(torch.load(fixture, weights_only=True))
    assert old.get("format") in (None, int(fixture.stem[len("format")])) and old["classes"] == ["blue", "green", "red"]
    path = tmp_path / "last.pth"
    torch.save(old, path)
    image = colour_data / "val" / "green" / "green_0.jpg"
    capsys.readouterr()
    assert predict.cli([str(image), "--weights", str(path), "--no-show"]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")
    summary = run_train(["--resume", str(path), "--data", str(colour_data), "--epochs", "2", "--workers", "0",
                         "--quiet"])
    assert [r["epoch"] for r in summary["history"]] == [1, 2]
    resumed = torch.load(path, weights_only=True)
    assert resumed["format"] == checkpoint.CHECKPOINT_FORMAT and resumed["config"]["img_size"] == 64
    assert resumed["config"]["sched"] == "plateau" and resumed["plateau"]["patience"] == 2
    assert ("raw_model" in resumed) == bool(resumed["config"]["ema"])
    # metrics rows of older runs named the crop side train_size: read back as crop_size
    assert not any("train_size" in row for row in resumed["metrics"])
    assert ("crop_size" in resumed["metrics"][0]) == bool({"train_size", "crop_size"} & set(old["metrics"][0]))
    assert resumed["metrics"][1]["crop_size"] == 64


def test_a_bare_state_dict_predicts_and_starts_a_run_but_is_not_resumed(colour_data, tmp_path, capsys):
    path = tmp_path / "AlexNet.pth"  # format 0: what the tutorial's train.py saves
    torch.save(AlexNet(num_classes=3).state_dict(), path)
    image = colour_data / "val" / "red" / "red_0.jpg"
    class_file = tmp_path / "class_indices.json"
    class_file.write_text('{"0": "blue", "1": "green", "2": "red"}')
    assert predict.cli([str(image), "--weights", str(path), "--class-indices", str(class_file), "--no-show"]) == 0
    assert train.cli(["--resume", str(path), "--quiet"]) == 2
    assert "a bare state_dict cannot be resumed (use --weights to start from it)" in capsys.readouterr().err


def test_a_checkpoint_of_a_newer_format_is_refused_by_name(tmp_path):
    path = tmp_path / "new.pth"
    torch.save({"model": AlexNet(num_classes=3).state_dict(), "arch": "tutorial", "num_classes": 3,
                "format": checkpoint.CHECKPOINT_FORMAT + 1}, path)
    with pytest.raises(CheckpointError, match=f"field 'format' is {checkpoint.CHECKPOINT_FORMAT + 1}: written by a newer"):
        checkpoint.load_checkpoint(str(path))

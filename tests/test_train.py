"""train.py end to end on tiny generated folders: outputs, accuracy, seeds, resume, recipes,
the settings object, and old checkpoints."""
import csv
import dataclasses
import json
import shutil

import pytest
import torch

from alexnet import decoding, figures, trainer, transforms
from alexnet import images
from alexnet import budget
from alexnet import settings
import train
from alexnet.machine import Machine
from conftest import COLOURS, make_colour_folder, run_train, train_args
from alexnet.errors import ArgumentError, DataError


def resolved(*argv: str) -> settings.Config:
    return settings.resolve_config(train.get_args_parser().parse_args(list(argv)))[0]


def test_training_writes_every_output_and_learns(trained):
    out, summary = trained
    for name in ("best.pth", "last.pth", "class_indices.json", "metrics.csv", "curves.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "class_indices.json").read_text()) == {str(i): c for i, c in enumerate(sorted(COLOURS))}
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"train_loss", "val_loss", "val_top1", "val_top3", "lr", "seconds", "elapsed_s"} <= set(rows[0])
    assert [float(r["elapsed_s"]) for r in rows] == sorted(float(r["elapsed_s"]) for r in rows)
    assert summary["best_acc"] >= 0.75  # 3 classes: chance is 0.33
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob("*.tmp-*"))


def test_checkpoint_is_one_self_describing_plain_dict(trained):
    out, summary = trained
    ckpt = torch.load(out / "best.pth", weights_only=True)  # plain types only, or this raises
    assert ckpt["arch"] == "tutorial" and ckpt["num_classes"] == 3
    assert ckpt["classes"] == sorted(COLOURS)
    assert ckpt["best_acc"] == summary["best_acc"] and ckpt["epoch"] == summary["best_epoch"]
    assert {"model", "optimizer", "config", "metrics", "rng", "mean", "std", "eval", "plan"} <= set(ckpt)
    assert ckpt["config"]["epochs"] == 4 and ckpt["config"]["img_size"] == 64
    # the config is the frozen settings object itself, every field of it
    assert settings.Config(**ckpt["config"]) == resolved(*train_args(ckpt["config"]["data"], out, "--epochs", "4"))
    last = torch.load(out / "last.pth", weights_only=True)
    assert last["epoch"] == 4 and len(last["metrics"]) == 4


def test_settings_are_frozen():
    cfg = resolved()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0


@pytest.mark.slow
def test_same_seed_same_loss_curve_and_curves_png_redrawn_as_often_as_asked(colour_data, tmp_path, monkeypatch):
    drawn = []  # the epochs each drawing of curves.png showed
    plot = figures.plot_curves
    monkeypatch.setattr(figures, "plot_curves", lambda cfg, history, path: drawn.append(len(history)) or
                        plot(cfg, history, path))
    runs = []
    for name, redraw_s in (("a", 0.0), ("b", 3600.0)):
        monkeypatch.setattr(figures, "REDRAW_S", redraw_s)
        runs.append(run_train(train_args(colour_data, tmp_path / name, "--epochs", "2", "--seed", "3")))
        assert (tmp_path / name / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert drawn == [1, 2, 2]  # every epoch when due; else once, when the run ends, with every epoch
    assert [r["train_loss"] for r in runs[0]["history"]] == [r["train_loss"] for r in runs[1]["history"]]
    assert [r["val_loss"] for r in runs[0]["history"]] == [r["val_loss"] for r in runs[1]["history"]]


@pytest.mark.slow
def test_progressive_resizing_grows_the_crops_to_the_full_size(colour_data, tmp_path, capsys):
    import predict

    result = run_train(train_args(colour_data, tmp_path, "--img-size", "96", "--img-size-start", "64", "--epochs", "4",
                                  "--workers", "1", "--val-resize", "112"))
    assert [r["crop_size"] for r in result["history"]] == [64, 80, 96, 96]  # as the loader worker cropped them
    ckpt = torch.load(tmp_path / "last.pth", weights_only=True)
    assert ckpt["eval"] == {"size": 96, "resize": 112}  # validation and predict.py use the full size
    assert ckpt["plan"] == {"epochs": 4, "sizes": (64, 80, 96, 96), "steps_per_epoch": 3, "last_epoch_steps": 3}
    image = colour_data / "val" / "red" / "red_0.jpg"
    capsys.readouterr()
    assert predict.cli([str(image), "--weights", str(tmp_path / "best.pth"), "--no-show"]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: red ")
    assert max(r["val_top1"] for r in result["history"]) > 0.5


@pytest.mark.slow
def test_mixup_and_cutmix_give_soft_labels_and_still_learn(colour_data, tmp_path):
    mix = trainer.batch_mixing(resolved("--mixup-alpha", "0.2", "--cutmix-alpha", "1.0"), 3)
    x, y = mix(torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert x.shape == (6, 3, 16, 16) and y.shape == (6, 3)
    torch.testing.assert_close(y.sum(1), torch.ones(6))
    assert trainer.batch_mixing(resolved(), 3) is None
    result = run_train(train_args(colour_data, tmp_path, "--mixup-alpha", "0.2", "--cutmix-alpha", "1.0", "--epochs", "4"))
    assert max(r["val_top1"] for r in result["history"]) > 0.5


@pytest.mark.slow
def test_ema_validates_the_average_leaves_training_alone_and_resumes(colour_data, tmp_path, capsys):
    import predict

    common = ("--sched", "constant", "--epochs", "3")  # no schedule tied to --epochs: a 2-epoch run is a prefix
    plain = run_train(train_args(colour_data, tmp_path / "plain", *common))
    ema = run_train(train_args(colour_data, tmp_path / "ema", *common, "--ema", "0.9"))
    assert all(0 <= r["raw_val_top1"] <= 1 for r in ema["history"])
    assert max(r["val_top1"] for r in ema["history"]) > 0.5
    # the raw weights train exactly as without EMA; the validated (and saved) ones are their average
    assert [r["train_loss"] for r in ema["history"]] == [r["train_loss"] for r in plain["history"]]
    assert [r["raw_val_top1"] for r in ema["history"]] == [r["val_top1"] for r in plain["history"]]
    full = torch.load(tmp_path / "ema" / "last.pth", weights_only=True)
    without = torch.load(tmp_path / "plain" / "last.pth", weights_only=True)
    weight = "classifier.6.weight"
    torch.testing.assert_close(full["raw_model"][weight], without["model"][weight])
    assert not torch.equal(full["model"][weight], full["raw_model"][weight])
    part = tmp_path / "part"
    run_train(train_args(colour_data, part, "--sched", "constant", "--epochs", "2", "--ema", "0.9"))
    run_train(["--resume", str(part / "last.pth"), "--epochs", "3", "--quiet", "--workers", "0"])
    resumed = torch.load(part / "last.pth", weights_only=True)
    for key in ("model", "raw_model"):
        torch.testing.assert_close(resumed[key][weight], full[key][weight], rtol=0, atol=1e-6)
    image = colour_data / "val" / "red" / "red_0.jpg"
    capsys.readouterr()
    assert predict.cli([str(image), "--weights", str(tmp_path / "ema" / "best.pth"), "--no-show"]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")


def test_tutorial_recipe_is_the_tutorials_settings():
    cfg = resolved("--recipe", "tutorial")
    assert cfg.tta is False
    assert (cfg.epochs, cfg.batch_size, cfg.opt, cfg.lr, cfg.wd, cfg.sched) == (10, 32, "adam", 2e-4, 0.0, "constant")
    assert (cfg.img_size, cfg.crop_scale, cfg.val_resize, cfg.label_smoothing) == (224, (0.08, 1.0), 0, 0.0)
    assert (cfg.arch, cfg.init, cfg.aug, cfg.lighting, cfg.clip_grad) == ("tutorial", "arch", "none", 0.0, 0.0)
    assert not cfg.img_size_start and not cfg.mixup_alpha and not cfg.cutmix_alpha
    assert cfg.data == "data_set/flower_data" and cfg.mean == cfg.std == (0.5, 0.5, 0.5)


def test_default_recipe_is_fast():
    cfg = resolved()
    assert cfg.recipe == "fast" and (cfg.opt, cfg.lr, cfg.batch_size, cfg.sched) == ("adamw", 1e-3, 32, "cosine")
    assert cfg.val_resize == 256


def test_long_recipe_is_fast_for_longer_with_small_crops_first():
    cfg = resolved("--recipe", "long")
    assert (cfg.opt, cfg.lr, cfg.sched, cfg.label_smoothing) == ("adamw", 1e-3, "cosine", 0.1)
    assert (cfg.epochs, cfg.img_size_start, cfg.img_size, cfg.lighting) == (70, 128, 224, 0.1)


def test_command_line_beats_the_recipe_and_tta_can_be_switched_off():
    cfg = resolved("--recipe", "paper", "--lr", "0.05", "--epochs", "3")
    assert (cfg.lr, cfg.epochs, cfg.opt, cfg.wd, cfg.lighting, cfg.tta) == (0.05, 3, "sgd", 5e-4, 0.1, True)
    assert resolved("--recipe", "paper", "--no-tta").tta is False


def test_validation_resize_follows_the_crop_size():
    assert resolved("--img-size", "128").val_resize == 146  # 256/224 of it, as torchvision's presets
    assert resolved("--img-size", "128", "--val-resize", "200").val_resize == 200
    assert resolved("--img-size", "128", "--recipe", "tutorial").val_resize == 0


def test_plateau_schedule_is_torchs_and_divides_after_patience_bad_epochs():
    model = torch.nn.Linear(2, 2)
    cfg = resolved("--recipe", "paper", "--patience", "2")
    optimizer = trainer.build_optimizer(cfg, model)
    plateau = trainer.plateau_schedule(cfg, optimizer)
    assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)
    lrs = []
    for top1 in (0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.7):
        plateau.step(top1)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.0001])


def test_lr_schedule_warms_up_then_follows_a_cosine_to_zero():
    cfg = resolved("--epochs", "4", "--warmup-epochs", "1")
    run_plan = budget.fixed_plan(4, budget.Resizing(0, 224), steps_per_epoch=10)
    lrs = [train.lr_at(cfg, run_plan, step) for step in range(40)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 1e-5


def test_loss_curve_labels_say_how_each_loss_is_measured():
    train_label, val_label = figures.loss_labels(resolved("--mixup-alpha", "0.2"))
    assert "label smoothing 0.1" in train_label and "MixUp" in train_label and "plain cross-entropy" in val_label
    assert "smoothing" not in figures.loss_labels(resolved("--recipe", "tutorial"))[0]


@pytest.mark.slow
def test_no_progress_bars_when_output_is_not_a_terminal(colour_data, tmp_path, capsys):
    argv = [a for a in train_args(colour_data, tmp_path, "--epochs", "1") if a != "--quiet"]
    run_train(argv)
    out = capsys.readouterr().out
    assert "\r" not in out and "epoch 1/1  train loss" in out


def test_demo_never_writes_into_a_data_folder_given_with_it(tmp_path, capsys):
    mine = make_colour_folder(tmp_path / "mine", n_train=1, n_val=1)
    before = sorted(p.relative_to(mine) for p in mine.rglob("*"))
    assert train.cli(["--demo", "--data", str(mine), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--demo" in err and str(mine) in err
    assert sorted(p.relative_to(mine) for p in mine.rglob("*")) == before
    assert not (tmp_path / "o").exists()


def test_resume_applies_safe_options_and_refuses_the_rest_by_name(trained, tmp_path, capsys):
    out, _ = trained
    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copy(out / "last.pth", copy / "last.pth")
    code = train.cli(["--resume", str(copy / "last.pth"), "--lr", "0.5", "--batch-size", "3", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--batch-size, --lr cannot change in a resumed run" in err
    cfg, _ = settings.resolve_config(train.get_args_parser().parse_args(
        ["--resume", str(copy / "last.pth"), "--epochs", "6", "--precision", "bf16", "--bad-images", "skip",
         "--lr", "0.001"]))  # --lr equal to the checkpoint's: nothing changes, nothing to refuse
    assert (cfg.epochs, cfg.precision, cfg.bad_images, cfg.output_dir) == (6, "bf16", "skip", str(copy))
    assert cfg.img_size == 64 and cfg.lr == 1e-3
    with pytest.raises(ArgumentError, match="already trained 4 of 4 epochs"):
        settings.resolve_config(train.get_args_parser().parse_args(["--resume", str(copy / "last.pth")]))


def test_missing_data_folder_says_how_to_get_data(tmp_path, capsys):
    assert train.cli(["--data", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "nowhere" in line and "data folder not found" in line
    assert "data_set/download.py" in line and "--demo" in line
    assert not (tmp_path / "out").exists()  # a run that fails at once leaves no folder behind


def test_empty_class_and_mismatched_classes(tmp_path):
    root = make_colour_folder(tmp_path / "d", n_train=2, n_val=1)
    for part in ("train", "val"):
        (root / part / "yellow").mkdir()
    (root / "val" / "yellow" / "y.jpg").write_bytes((root / "val" / "red" / "red_0.jpg").read_bytes())
    with pytest.raises(DataError, match=r"train/yellow: class folder has no images"):
        run_train(train_args(root, tmp_path / "o1"))
    shutil.rmtree(root / "val" / "yellow")
    (root / "train" / "yellow").rmdir()
    shutil.rmtree(root / "val" / "red")
    with pytest.raises(DataError, match=r"val: classes \['blue', 'green'\] differ"):
        run_train(train_args(root, tmp_path / "o2"))


def test_demo_data_is_a_five_class_image_folder(tmp_path):
    from alexnet import folders
    from alexnet import shapes

    root = shapes.make_shapes(tmp_path / "shapes", train_per_class=3, val_per_class=2, size=64)
    assert folders.find_classes(f"{root}/train") == sorted(shapes.SHAPES)
    assert len(list((tmp_path / "shapes" / "val").rglob("*.jpg"))) == 10
    assert decoding.decode_rgb(str(next((tmp_path / "shapes" / "train" / "star").iterdir()))).shape == (3, 64, 64)


def test_demo_flag_sets_the_demo_settings():
    cfg = resolved("--demo")
    assert cfg.data == settings.DEMO_DATA and cfg.recipe == "fast"
    assert all(getattr(cfg, k) == v for k, v in settings.DEMO.items())
    assert resolved("--demo", "--epochs", "1").epochs == 1


@pytest.mark.slow
def test_weights_load_torchvision_state_dict_and_replace_only_the_head(tmp_path):
    import torchvision

    tv = torchvision.models.alexnet(weights=None).state_dict()
    torch.save(tv, tmp_path / "alexnet-imagenet.pth")
    cfg = resolved("--weights", str(tmp_path / "alexnet-imagenet.pth"), "--freeze-features")
    assert cfg.arch == "torchvision" and cfg.mean == images.IMAGENET_MEAN
    model = trainer.init_model(cfg, 5, None, Machine(torch.device("cpu"), "fp32"))
    ours = model.state_dict()
    for k, v in tv.items():
        if k.startswith("classifier.6."):
            assert ours[k].shape[0] == 5
        else:
            assert torch.equal(ours[k], v), k
    assert not any(p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())


@pytest.mark.slow
def test_fine_tuning_end_to_end_keeps_frozen_features(colour_data, tmp_path):
    from model import AlexNet

    start = AlexNet(num_classes=1000, init_weights=True).state_dict()
    torch.save(start, tmp_path / "start.pth")
    run_train(train_args(colour_data, tmp_path / "out", "--epochs", "1", "--weights", str(tmp_path / "start.pth"),
                         "--freeze-features"))
    ckpt = torch.load(tmp_path / "out" / "best.pth", weights_only=True)
    assert ckpt["num_classes"] == 3 and ckpt["mean"] == list(images.IMAGENET_MEAN)
    assert all(torch.equal(ckpt["model"][k], v) for k, v in start.items() if k.startswith("features."))
    assert not torch.equal(ckpt["model"]["classifier.1.weight"], start["classifier.1.weight"])


def test_weights_that_do_not_fit_are_refused(colour_data, tmp_path):
    torch.save({"features.0.weight": torch.zeros(48, 3, 11, 11)}, tmp_path / "odd.pth")
    with pytest.raises(Exception, match="odd.pth: "):
        run_train(train_args(colour_data, tmp_path / "out", "--weights", str(tmp_path / "odd.pth")))


def test_train_py_builds_two_torchvision_image_folders(colour_data, tmp_path):
    """What train.py trains and validates on are torchvision DatasetFolders (ImageFolder's
    interface), listing what ImageFolder lists; the transforms are torchvision's own ops."""
    from torchvision import datasets

    cfg = resolved(*train_args(colour_data, tmp_path))
    built = train.load_data(cfg, Machine(torch.device("cpu"), "fp32", quiet=True))
    for split, loader in (("train", built.train), ("val", built.val)):
        ours, theirs = loader.dataset, datasets.ImageFolder(str(colour_data / split))
        assert isinstance(ours, datasets.DatasetFolder)
        assert (ours.classes, ours.class_to_idx) == (theirs.classes, theirs.class_to_idx)
        assert ours.samples == theirs.samples and ours.targets == theirs.targets
        assert ours.root == str(colour_data / split) and ours.cached
    assert isinstance(built.train.dataset.transform, transforms.TrainAugment)
    assert built.val.dataset.transform is None and built.val.dataset.pre_transform == cfg.eval_transform
    images, targets = next(iter(built.train))
    assert images.shape == (8, 3, 64, 64) and images.dtype == torch.uint8 and targets.tolist()[0] in (0, 1, 2)


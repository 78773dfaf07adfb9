"""train.py end to end on tiny generated folders: outputs, accuracy, seeds, resume, recipes."""
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import data
import train
from conftest import COLOURS, ROOT, make_colour_folder, run_script, run_train, train_args


def test_training_writes_every_output_and_learns(trained):
    out, summary = trained
    for name in ("best.pth", "last.pth", "class_indices.json", "metrics.csv", "curves.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "class_indices.json").read_text()) == {str(i): c for i, c in enumerate(sorted(COLOURS))}
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"train_loss", "val_loss", "val_top1", "val_top3", "lr", "seconds"} <= set(rows[0])
    assert summary["best_acc"] >= 0.75  # 3 classes: chance is 0.33
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_is_one_self_describing_plain_dict(trained):
    out, summary = trained
    ckpt = torch.load(out / "best.pth", weights_only=True)  # plain types only, or this raises
    assert ckpt["arch"] == "tutorial" and ckpt["num_classes"] == 3
    assert ckpt["classes"] == sorted(COLOURS)
    assert ckpt["best_acc"] == summary["best_acc"] and ckpt["epoch"] == summary["best_epoch"]
    assert {"model", "optimizer", "config", "metrics", "rng", "mean", "std", "eval"} <= set(ckpt)
    assert ckpt["config"]["epochs"] == 4 and ckpt["config"]["img_size"] == 64
    last = torch.load(out / "last.pth", weights_only=True)
    assert last["epoch"] == 4 and len(last["metrics"]) == 4


def test_same_seed_same_loss_curve(colour_data, tmp_path):
    runs = [run_train(train_args(colour_data, tmp_path / name, "--epochs", "2", "--seed", "3"))
            for name in ("a", "b")]
    assert [r["train_loss"] for r in runs[0]["history"]] == [r["train_loss"] for r in runs[1]["history"]]
    assert [r["val_loss"] for r in runs[0]["history"]] == [r["val_loss"] for r in runs[1]["history"]]


def test_progressive_resizing_grows_the_crops_to_the_full_size(colour_data, tmp_path):
    result = run_train(train_args(colour_data, tmp_path, "--img-size", "96", "--img-size-start", "64", "--epochs", "4",
                                  "--workers", "1", "--val-resize", "112"))
    assert [r["train_size"] for r in result["history"]] == [64, 80, 96, 96]  # as the loader worker cropped them
    ckpt = torch.load(tmp_path / "last.pth", weights_only=True)
    assert ckpt["eval"] == {"size": 96, "resize": 112}  # validation and predict.py use the full size
    image = colour_data / "val" / "red" / "red_0.jpg"
    out = run_script("predict.py", str(image), "--weights", str(tmp_path / "best.pth"), "--no-show")
    assert out.returncode == 0 and out.stdout.startswith(f"{image}: red "), out.stderr
    assert max(r["val_top1"] for r in result["history"]) > 0.5


def test_mixup_and_cutmix_give_soft_labels_and_still_learn(colour_data, tmp_path):
    args = train.resolve(train.get_args_parser().parse_args(["--mixup-alpha", "0.2", "--cutmix-alpha", "1.0"]))
    mix = train.batch_mixing(args, 3)
    x, y = mix(torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert x.shape == (6, 3, 16, 16) and y.shape == (6, 3)
    torch.testing.assert_close(y.sum(1), torch.ones(6))
    assert train.batch_mixing(train.resolve(train.get_args_parser().parse_args([])), 3) is None
    result = run_train(train_args(colour_data, tmp_path, "--mixup-alpha", "0.2", "--cutmix-alpha", "1.0", "--epochs", "4"))
    assert max(r["val_top1"] for r in result["history"]) > 0.5


def test_ema_validates_the_average_leaves_training_alone_and_resumes(colour_data, tmp_path):
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
    out = run_script("predict.py", str(image), "--weights", str(tmp_path / "ema" / "best.pth"), "--no-show")
    assert out.returncode == 0 and out.stdout.startswith(f"{image}: "), out.stderr


def test_tutorial_recipe_is_the_tutorials_settings():
    args = train.resolve(train.get_args_parser().parse_args(["--recipe", "tutorial"]))
    assert args.tta is False
    assert (args.epochs, args.batch_size, args.opt, args.lr, args.wd, args.sched) == (10, 32, "adam", 2e-4, 0.0, "constant")
    assert (args.img_size, args.crop_scale, args.val_resize, args.label_smoothing) == (224, [0.08, 1.0], 0, 0.0)
    assert (args.arch, args.init, args.aug, args.lighting, args.clip_grad) == ("tutorial", "arch", "none", 0.0, 0.0)
    assert not args.img_size_start and not args.mixup_alpha and not args.cutmix_alpha
    assert args.data == "data_set/flower_data"


def test_default_recipe_is_fast():
    args = train.resolve(train.get_args_parser().parse_args([]))
    assert args.recipe == "fast" and (args.opt, args.lr, args.batch_size, args.sched) == ("adamw", 1e-3, 32, "cosine")


def test_long_recipe_is_fast_for_longer_with_small_crops_first():
    args = train.resolve(train.get_args_parser().parse_args(["--recipe", "long"]))
    assert (args.opt, args.lr, args.sched, args.label_smoothing) == ("adamw", 1e-3, "cosine", 0.1)
    assert (args.epochs, args.img_size_start, args.img_size, args.lighting) == (70, 128, 224, 0.1)


def test_command_line_beats_the_recipe():
    args = train.resolve(train.get_args_parser().parse_args(["--recipe", "paper", "--lr", "0.05", "--epochs", "3"]))
    assert (args.lr, args.epochs, args.opt, args.wd, args.lighting, args.tta) == (0.05, 3, "sgd", 5e-4, 0.1, True)


def test_missing_data_folder_says_how_to_get_data(tmp_path):
    r = run_script("train.py", "--data", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "out"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "nowhere" in line and "data folder not found" in line
    assert "data_set/download.py" in line and "--demo" in line


def test_empty_class_and_mismatched_classes(tmp_path):
    root = make_colour_folder(tmp_path / "d", n_train=2, n_val=1)
    for part in ("train", "val"):
        (root / part / "yellow").mkdir()
    (root / "val" / "yellow" / "y.jpg").write_bytes((root / "val" / "red" / "red_0.jpg").read_bytes())
    with pytest.raises(data.DataError, match=r"train/yellow: class folder has no images"):
        run_train(train_args(root, tmp_path / "o1"))
    shutil.rmtree(root / "val" / "yellow")
    (root / "train" / "yellow").rmdir()
    shutil.rmtree(root / "val" / "red")
    with pytest.raises(data.DataError, match=r"val: classes \['blue', 'green'\] differ"):
        run_train(train_args(root, tmp_path / "o2"))


def test_demo_data_is_a_five_class_image_folder(tmp_path):
    root = data.make_shapes(str(tmp_path / "shapes"), train_per_class=3, val_per_class=2, size=64)
    assert data.find_classes(f"{root}/train") == sorted(data.SHAPES)
    assert len(list((tmp_path / "shapes" / "val").rglob("*.jpg"))) == 10
    assert data.decode_rgb(str(next((tmp_path / "shapes" / "train" / "star").iterdir()))).shape == (3, 64, 64)


def test_demo_flag_sets_the_demo_settings():
    args = train.resolve(train.get_args_parser().parse_args(["--demo"]))
    assert args.data == train.DEMO_DATA and args.recipe == "fast"
    assert all(getattr(args, k) == v for k, v in train.DEMO.items())
    args = train.resolve(train.get_args_parser().parse_args(["--demo", "--epochs", "1"]))
    assert args.epochs == 1


def test_torchrun_two_processes_share_the_work(colour_data, tmp_path):
    """DistributedDataParallel over gloo on the CPU: the code path several GPUs take."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "train.py"), *train_args(colour_data, out, "--epochs", "2", "--device", "cpu")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("done: best val top-1") == 1  # logging on rank 0 only
    assert "30 train / 12 val images" in proc.stdout and "batch 8 x 2" in proc.stdout
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 2 and not any(k.startswith("module.") for k in ckpt["model"])


def test_weights_load_torchvision_state_dict_and_replace_only_the_head(tmp_path):
    import torchvision

    tv = torchvision.models.alexnet(weights=None).state_dict()
    torch.save(tv, tmp_path / "alexnet-imagenet.pth")
    args = train.resolve(train.get_args_parser().parse_args(["--weights", str(tmp_path / "alexnet-imagenet.pth"),
                                                             "--freeze-features"]))
    model = train.init_model(args, num_classes=5, resume=None, log=lambda *a: None)
    assert args.arch == "torchvision" and args.mean == train.IMAGENET_MEAN
    ours = model.state_dict()
    for k, v in tv.items():
        if k.startswith("classifier.6."):
            assert ours[k].shape[0] == 5
        else:
            assert torch.equal(ours[k], v), k
    assert not any(p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())


def test_fine_tuning_end_to_end_keeps_frozen_features(colour_data, tmp_path):
    from model import AlexNet

    start = AlexNet(num_classes=1000, init_weights=True).state_dict()
    torch.save(start, tmp_path / "start.pth")
    run_train(train_args(colour_data, tmp_path / "out", "--epochs", "1", "--weights", str(tmp_path / "start.pth"),
                         "--freeze-features"))
    ckpt = torch.load(tmp_path / "out" / "best.pth", weights_only=True)
    assert ckpt["num_classes"] == 3 and ckpt["mean"] == train.IMAGENET_MEAN
    assert all(torch.equal(ckpt["model"][k], v) for k, v in start.items() if k.startswith("features."))
    assert not torch.equal(ckpt["model"]["classifier.1.weight"], start["classifier.1.weight"])


def test_weights_that_do_not_fit_are_refused(colour_data, tmp_path):
    torch.save({"features.0.weight": torch.zeros(48, 3, 11, 11)}, tmp_path / "odd.pth")
    with pytest.raises(Exception, match="odd.pth: "):
        run_train(train_args(colour_data, tmp_path / "out", "--weights", str(tmp_path / "odd.pth")))

"""Inputs people really give: option values, devices, unwritable outputs, odd file names,
links, nested and tiny classes, EXIF-rotated photos, extreme shapes. Each one gets one
clear line and a non-zero exit, or works; none trains more than a tiny epoch."""
import json
import os
import shutil
import sys

import pytest
import torch
from PIL import Image, ImageOps

from alexnet import decoding, transforms
from alexnet.errors import DataError
from alexnet import images
from alexnet import folders
import predict
import train
from conftest import ROOT, make_colour_folder, one_error_line, run_train, train_args

sys.path.insert(0, str(ROOT / "data_set"))
import split_data  # noqa: E402
from alexnet import splitting  # noqa: E402

NOT_UTF8 = os.fsdecode(b"caf\xe9 \xff.jpg")  # a name Linux allows that is not UTF-8


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs 0: must be in 1..100000"),
    (["--epochs", "-3"], "--epochs -3: must be in 1..100000"),
    (["--batch-size", "0"], "--batch-size 0: must be in 1..4096"),
    (["--batch-size", "100000"], "--batch-size 100000: must be in 1..4096"),
    (["--val-batch-size", "-1"], "--val-batch-size -1"),
    (["--lr", "0"], "--lr 0.0: must be in (0, 10]"),
    (["--lr", "-0.001"], "--lr -0.001"),
    (["--lr", "1e3"], "--lr 1000.0: must be in (0, 10]"),
    (["--lr", "nan"], "--lr nan: must be a finite number"),
    (["--momentum", "1.5"], "--momentum 1.5"),
    (["--wd", "-1"], "--wd -1.0"),
    (["--dropout", "1"], "--dropout 1.0: must be in [0, 1)"),
    (["--label-smoothing", "1.5"], "--label-smoothing 1.5"),
    (["--crop-scale", "0.9", "0.1"], "--crop-scale 0.9 0.1: need 0 < MIN <= MAX <= 1"),
    (["--crop-scale", "0", "1"], "--crop-scale 0.0 1.0"),
    (["--crop-scale", "0.5", "1.5"], "--crop-scale 0.5 1.5"),
    (["--topk", "0"], "--topk 0"),
    (["--workers", "-5"], "--workers -5"),
    (["--img-size", "32"], "--img-size 32: must be in 63..1024 (AlexNet needs at least 63 px)"),
    (["--img-size", "5000"], "--img-size 5000"),
    (["--img-size-start", "300"], "--img-size-start 300"),
    (["--img-size-ramp", "0.9", "0.5"], "--img-size-ramp 0.9 0.5: must be two fractions FROM TO with 0 <= FROM < TO <= 1"),
    (["--img-size-ramp", "0", "nan"], "--img-size-ramp 0.0 nan"),
    (["--val-resize", "100"], "--val-resize 100: must be 0 (squash) or in --img-size 224..4096"),
    (["--warmup-epochs", "20"], "--warmup-epochs 20.0"),
    (["--ema", "1"], "--ema 1.0"),
    (["--clip-grad", "-1"], "--clip-grad -1.0"),
    (["--lighting", "inf"], "--lighting inf: must be a finite number"),
    (["--mixup-alpha", "-1"], "--mixup-alpha -1.0"),
    (["--cutmix-alpha", "-0.5"], "--cutmix-alpha -0.5"),
    (["--cache-mem", "-2"], "--cache-mem -2.0"),
    (["--seed", "-1"], "--seed -1"),
    (["--patience", "0"], "--patience 0"),
    (["--demo", "--data", "x"], "--demo trains on its own generated data_set/demo_shapes"),
])
def test_every_numeric_option_is_checked_before_any_work(argv, message, colour_data, tmp_path, capsys):
    if "--data" not in argv:
        argv = [*argv, "--data", str(colour_data)]
    assert train.cli([*argv, "--output-dir", str(tmp_path / "out")]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: {message}")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:3", "mps", "gpu", "CPU"])
def test_a_device_that_is_not_here_says_what_is(device, trained, colour_data, tmp_path, capsys):
    out, _ = trained
    assert train.cli(train_args(colour_data, tmp_path / "o", "--device", device)) == 2
    assert one_error_line(capsys.readouterr().err).endswith("this machine has: cpu")
    image = colour_data / "val" / "red" / "red_0.jpg"
    assert predict.cli([str(image), "--weights", str(out / "best.pth"), "--device", device, "--no-show"]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: --device {device}: ")


def test_outputs_that_cannot_be_written_fail_first_and_leave_nothing(trained, colour_data, tmp_path, capsys):
    blocker = tmp_path / "a file"
    blocker.write_text("mine")
    cases = [("--output-dir", str(blocker), "a file is in the way"),
             ("--output-dir", "/proc/alexnet-test/out", "cannot create or write this folder"),
             ("--cache-dir", str(blocker / "cache"), "cannot create or write this folder")]
    for option, path, why in cases:
        extra = [option, path] if option == "--output-dir" else [option, path, "--output-dir", str(tmp_path / "o")]
        argv = train_args(colour_data, tmp_path / "o", *extra)
        assert train.cli(argv) == 2
        assert why in one_error_line(capsys.readouterr().err), (option, path)
        assert blocker.read_text() == "mine" and not (tmp_path / "o").exists()
    out, _ = trained
    image = colour_data / "val" / "red" / "red_0.jpg"
    for save, why in ((tmp_path / "missing" / "fig.png", "does not exist"), (tmp_path, "names a folder"),
                      ("/proc/alexnet-test.png", "cannot write there")):
        assert predict.cli([str(image), "--weights", str(out / "best.pth"), "--save", str(save), "--no-show"]) == 2
        stdout, err = capsys.readouterr()
        assert why in one_error_line(err) and stdout == ""  # refused before predicting


@pytest.mark.parametrize("argv, message", [(["--topk", "0"], "--topk 0"), (["--batch-size", "0"], "--batch-size 0")])
def test_predict_options_are_checked(argv, message, trained, colour_data, capsys):
    out, _ = trained
    assert predict.cli([str(colour_data / "val" / "red" / "red_0.jpg"), "--weights", str(out / "best.pth"), *argv]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: {message}")


@pytest.mark.parametrize("script, argv, message", [
    ("evaluate", ["--topk", "0"], "--topk 0: must be in 1..4096"),
    ("evaluate", ["--mistakes", "-1"], "--mistakes -1"),
    ("evaluate", ["--neighbours", "99999"], "--neighbours 99999"),
    ("export", ["--tolerance", "5"], "--tolerance 5.0: must be in (0, 1)"),
    ("export", ["--tolerance", "nan"], "--tolerance nan"),
    ("app", ["--port", "0"], "--port 0: must be in 1..65535"),
    ("app", ["--port", "70000"], "--port 70000"),
    ("app", ["--max-upload-mb", "0"], "--max-upload-mb 0.0"),
])
def test_evaluate_export_and_app_options_are_checked(script, argv, message, trained, capsys):
    out, _ = trained
    weights = str(out / "best.pth")
    argv = [weights, *argv] if script == "export" else ["--weights", weights, *argv]
    assert __import__(script).cli(argv) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: {message}")


@pytest.mark.slow
def test_file_and_folder_names_that_are_not_utf8(tmp_path, capsys):
    root = make_colour_folder(tmp_path / "d", n_train=3, n_val=1)
    odd_class = os.fsdecode(b"r\xf6d")
    for part in ("train", "val"):
        (root / part / "red").rename(root / part / odd_class)
    shutil.copy(root / "train" / "green" / "green_0.jpg", root / "train" / odd_class / NOT_UTF8)  # not a copy within its class: split alone
    out = tmp_path / "out"
    summary = run_train(train_args(root, out, "--epochs", "1", "--cache-mem", "0"))
    assert summary["history"][0]["epoch"] == 1
    assert json.loads((out / "class_indices.json").read_text())["2"] == odd_class  # round trip of the name
    capsys.readouterr()
    image = root / "train" / odd_class / NOT_UTF8
    assert predict.cli([str(image), "--weights", str(out / "best.pth"), "--no-show"]) == 0
    assert "caf\\xe9 \\xff.jpg: " in capsys.readouterr().out  # printed with escapes, not a crash
    counts = split_data.split(root / "train", tmp_path / "split", quiet=True)
    assert counts == {"train": 3 * 3 + 1 - 3, "val": 3}
    assert sum(1 for p in (tmp_path / "split").rglob("*") if p.name == NOT_UTF8) == 1


def test_links_neither_loop_nor_count_an_image_twice(tmp_path):
    root = make_colour_folder(tmp_path / "d", n_train=3, n_val=1)
    red = root / "train" / "red"
    (red / "back up").symlink_to(root / "train")  # a link to an ancestor: a scan that follows it loops
    (red / "again.jpg").symlink_to(red / "red_0.jpg")  # the same photo under a second name
    (red / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    listing = folders.list_images(str(red))
    assert len(listing.files) == 3 and listing.duplicates == 1
    described = folders.describe_skipped(listing)
    assert "1 second name(s)" in described and "1 (broken link)" in described and "1 (link back up the tree)" in described
    samples, _ = folders.class_samples(str(root / "train"), ["blue", "green", "red"])
    assert len(samples) == 9
    plan, _ = splitting.plan_split(root / "train", 0.34, seed=0)
    assert sum(len(files) for parts in plan.values() for files in parts.values()) == 9


def test_nested_class_folders_are_read_alike_by_the_split_tool_and_train(tmp_path):
    root = make_colour_folder(tmp_path / "raw", n_train=4, n_val=1) / "train"
    (root / "red" / "2023" / "summer").mkdir(parents=True)
    shutil.move(root / "red" / "red_1.jpg", root / "red" / "2023" / "summer" / "red_1.jpg")
    shutil.move(root / "red" / "red_2.jpg", root / "red" / "2023" / "red_2.jpg")
    (root / "blue" / "IMG_0001.JXL").write_bytes(b"\0")
    (root / "blue" / "notes.txt").write_text("x")
    trained_on, listing = folders.class_samples(str(root), ["blue", "green", "red"])
    plan, skipped = splitting.plan_split(root, 0.25, seed=0)
    assert sorted(os.path.relpath(p, root) for p, _ in trained_on) == \
        sorted(os.path.join(c, f) for c, parts in plan.items() for files in parts.values() for f in files)
    assert folders.describe_skipped(skipped) == folders.describe_skipped(listing) == \
        f"skipped 2 files: 1 .JXL (JPEG XL images no decoder here reads, such as {root / 'blue' / 'IMG_0001.JXL'}: " \
        f"convert them to JPEG or PNG), 1 .txt"
    split_data.split(root, tmp_path / "split", 0.25, quiet=True)
    assert len(list((tmp_path / "split").rglob("*.jpg"))) == 12


def test_folder_listing_matches_torchvision_image_folder_on_an_ordinary_tree(colour_data):
    from torchvision import datasets

    theirs = datasets.ImageFolder(str(colour_data / "train"), is_valid_file=folders.is_image_file).samples
    ours, _ = folders.class_samples(str(colour_data / "train"), folders.find_classes(str(colour_data / "train")))
    assert ours == theirs


def test_split_tool_small_classes_and_a_destination_inside_the_source(tmp_path, capsys):
    raw = tmp_path / "raw"
    for name, n in (("big", 12), ("pair", 2), ("single", 1)):
        (raw / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(raw / name / f"{i}.jpg")
    assert split_data.main([str(raw), "--dest", str(tmp_path / "out")]) == 2
    assert "single: class folder has 1 image(s)" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
    shutil.rmtree(raw / "single")
    assert split_data.split(raw, tmp_path / "out", 0.1, quiet=True) == {"train": 11 + 1, "val": 1 + 1}
    assert split_data.main([str(raw), "--dest", str(raw / "split")]) == 2
    assert "is inside the source folder" in one_error_line(capsys.readouterr().err)
    assert split_data.main([str(raw), "--dest", str(tmp_path / "o2"), "--val-ratio", "0"]) == 2
    assert "--val-ratio 0.0" in one_error_line(capsys.readouterr().err)


def test_one_class_or_a_class_emptied_by_skipping_is_an_error(tmp_path, capsys):
    root = make_colour_folder(tmp_path / "one", n_train=2, n_val=1)
    for part in ("train", "val"):
        for c in ("blue", "green"):
            shutil.rmtree(root / part / c)
    assert train.cli(train_args(root, tmp_path / "o")) == 2
    assert "only one class folder (red)" in one_error_line(capsys.readouterr().err)
    root = make_colour_folder(tmp_path / "two", n_train=2, n_val=1)
    for img in (root / "train" / "green").iterdir():
        img.write_bytes(b"broken")
    assert train.cli(train_args(root, tmp_path / "o", "--bad-images", "skip")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"error: {root / 'train' / 'green'}: no readable images left in this class after skipping"


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_is_applied_alike_on_every_path(orientation, tmp_path):
    pixels = torch.randint(0, 256, (12, 20, 3), dtype=torch.uint8)
    img = Image.fromarray(pixels.numpy())
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"phone_{orientation}.png"
    img.save(path, exif=exif)
    upright = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    expected = decoding.pil_to_tensor(upright)
    assert tuple(expected.shape[1:]) == ((20, 12) if orientation >= 5 else (12, 20))
    assert torch.equal(decoding.decode_rgb(str(path)), expected)  # train.py and evaluate.py
    assert torch.equal(decoding.decode_pillow(str(path)), expected)  # predict.py
    with Image.open(path) as opened:  # app.py's uploads
        assert torch.equal(decoding.rgb_from_pil(opened, "upload"), expected)


@pytest.mark.parametrize("size", [(3000, 2), (2, 3000), (60000, 1), (1, 1)])
def test_memory_follows_the_real_pixel_count_whatever_the_shape(size, tmp_path):
    path = tmp_path / "odd.png"
    Image.new("RGB", size, (200, 30, 30)).save(path)
    cached = transforms.ShortSide(146)(decoding.decode_rgb(str(path)))
    assert min(cached.shape[1:]) == 146 and max(cached.shape[1:]) <= 146 * images.MAX_ASPECT
    assert cached.numel() == transforms.ShortSide(146).cached_bytes(str(path))  # the budget sees what is stored
    assert transforms.EvalTransform(128, 146)(decoding.decode_pillow(str(path))).shape == (3, 128, 128)
    assert transforms.EvalTransform(128, 0, tta=True)(decoding.decode_pillow(str(path))).shape == (10, 3, 128, 128)


def test_a_decompression_bomb_is_refused_on_every_path(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (9500, 9500)).save(path)  # over Pillow's 89.5 Mpx limit
    for decode in (decoding.decode_rgb, decoding.decode_pillow):
        with pytest.raises(DataError, match="bomb.png: 90,250,000 pixels, over the 89,478,485 an image may have"):
            decode(str(path))
    with Image.open(path) as opened, pytest.raises(DataError, match="upload: 90,250,000 pixels, over the"):
        decoding.rgb_from_pil(opened, "upload")

"""Round four of hostile inputs: phone photos in HEIC, the image files Windows and the web
save (.jfif, .gif, .ico) listed alike by every tool, a val/ that is train/, class names that
look the same, a class name holding a newline, stderr closed, and names that reach the web
page's Markdown. Each test plants the case, runs the real command and checks its exit code
and the message or the file it leaves. (The advice the tools print: test_advice.py.)"""
import shutil
import subprocess
import sys
import unicodedata

import pytest
import torch
from PIL import Image

import check
import predict
import split_data
import train
from alexnet import decoding, folders, images
from conftest import ROOT, one_error_line, train_args


def heic_photo(path, size=(80, 60)) -> None:
    """A real HEIC file, as an iPhone saves one (HEVC in a HEIF container), written by pillow-heif."""
    import pillow_heif

    pillow_heif.from_pillow(Image.effect_noise(size, 40).convert("RGB")).save(path, quality=90)


# ---------------------------------------------------------------- phone photos, and one list of image files
def test_a_heic_photo_is_read_by_every_path_also_when_named_jpg(trained, tmp_path, capsys):
    heic = tmp_path / "IMG_0001.HEIC"
    heic_photo(heic)
    named_jpg = tmp_path / "IMG_0002.jpg"  # what a phone's share sheet sometimes calls it
    shutil.copy(heic, named_jpg)
    for path in (heic, named_jpg):
        assert decoding.decode_rgb(str(path)).shape == (3, 60, 80)  # train.py's and evaluate.py's decoder
        with images.open_image(str(path)) as img:  # predict.py's, the web page's, the ONNX path's
            assert images.upright_rgb(img, str(path)).size == (80, 60)
    weights = str(trained[0] / "best.pth")
    assert predict.cli([str(heic), str(named_jpg), "--weights", weights, "--no-show"]) == 0
    printed = capsys.readouterr().out
    assert f"{heic}: " in printed and f"{named_jpg}: " in printed
    assert predict.cli([str(tmp_path), "--weights", weights, "--no-show"]) == 0  # a folder lists both
    assert "skipped" not in capsys.readouterr().out


def test_a_heic_photo_without_pillow_heif_names_the_format_and_the_install(tmp_path, monkeypatch):
    heic = tmp_path / "IMG_0001.HEIC"
    heic_photo(heic)
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # not installed
    monkeypatch.setattr(Image, "ID", [i for i in Image.ID if i != "HEIF"])  # as before the first HEIC photo
    monkeypatch.setattr(Image, "OPEN", {k: v for k, v in Image.OPEN.items() if k != "HEIF"})
    with pytest.raises(images.DataError, match="a HEIC/HEIF photo .*pip install pillow-heif"):
        images.open_image(str(heic))
    (tmp_path / "notes.jpg").write_text("not a photo")
    with pytest.raises(images.DataError, match="notes.jpg: not a readable image"):
        images.open_image(str(tmp_path / "notes.jpg"))


def test_jfif_gif_and_ico_files_are_images_to_every_tool_and_a_jpeg_xl_is_named(trained, tmp_path, capsys):
    folder = tmp_path / "saved from the web"
    folder.mkdir()
    noise = Image.effect_noise((48, 40), 50).convert("RGB")
    noise.save(folder / "a.jfif", format="JPEG")
    noise.save(folder / "b.gif")
    noise.save(folder / "c.ico")
    (folder / "d.jxl").write_bytes(b"\xff\x0a")
    listing = folders.list_images(str(folder))
    assert [p.rsplit("/", 1)[1] for p in listing.files] == ["a.jfif", "b.gif", "c.ico"]
    assert f"1 .jxl (JPEG XL images no decoder here reads, such as {folder / 'd.jxl'}: convert them to JPEG " \
           f"or PNG)" in folders.describe_skipped(listing)
    assert predict.cli([str(folder), "--weights", str(trained[0] / "best.pth"), "--no-show"]) == 0
    printed = capsys.readouterr().out
    assert all(f"{folder / name}: " in printed for name in ("a.jfif", "b.gif", "c.ico"))
    assert str(folder / "d.jxl") in printed
    assert predict.cli([str(folder / "d.jxl"), "--weights", str(trained[0] / "best.pth"), "--no-show"]) == 1
    assert f"{folder / 'd.jxl'}: a JPEG XL image, which no decoder here reads: convert it to JPEG or PNG" in \
        capsys.readouterr().err


# ---------------------------------------------------------------- the folders
@pytest.mark.parametrize("linked", ["val", "val/red"])
def test_a_val_that_is_train_is_refused_with_how_to_split(linked, colour_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(colour_data / "train", data / "train")
    if linked == "val":
        (data / "val").symlink_to(data / "train")
    else:
        shutil.copytree(colour_data / "val", data / "val")
        shutil.rmtree(data / "val" / "red")
        (data / "val" / "red").symlink_to(data / "train" / "red")
    assert train.cli(train_args(data, tmp_path / "run")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{data / linked}: is the same folder as {data / 'train'}" in line and "split_data.py" in line
    assert check.cli([str(data), "--output-dir", str(tmp_path / "check")]) == 2
    assert one_error_line(capsys.readouterr().err) == line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("names", [("rose", "Rose"), (unicodedata.normalize("NFC", "café"),
                                                      unicodedata.normalize("NFD", "café")),
                                   ("tulip", "tu\u200blip")], ids=["case", "nfc-nfd", "zero-width"])
def test_class_names_that_look_the_same_are_refused_naming_both(names, colour_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(colour_data, data)
    for split in ("train", "val"):
        (data / split / "red").rename(data / split / names[0])
        (data / split / "green").rename(data / split / names[1])
    assert train.cli(train_args(data, tmp_path / "run")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{data / 'train' / sorted(names)[0]} and {data / 'train' / sorted(names)[1]}" in line
    assert "names look the same" in line and ascii(names[1]) in line
    assert split_data.main([str(data / "train"), "--dest", str(tmp_path / "split")]) == 2
    assert "names look the same" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "split").exists()


@pytest.mark.slow
def test_a_class_name_with_a_newline_stays_on_one_log_line(colour_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(colour_data, data)
    for split in ("train", "val"):
        (data / split / "red").rename(data / split / "red\nrose")
    assert train.cli(train_args(data, tmp_path / "run", "--epochs", "1")) == 0
    printed = capsys.readouterr().out
    assert "red\\nrose 10" in printed and not any(line.startswith("rose") for line in printed.splitlines())
    assert torch.load(tmp_path / "run" / "best.pth", weights_only=True)["classes"][2] == "red\nrose"  # kept as is
    photo = data / "val" / "red\nrose" / "red_0.jpg"
    assert predict.cli([str(photo), "--weights", str(tmp_path / "run" / "best.pth"), "--topk", "3", "--no-show"]) == 0
    printed = capsys.readouterr().out
    assert "red\\nrose" in printed and not any(line.startswith("rose") for line in printed.splitlines())


@pytest.mark.slow
def test_train_with_stderr_closed_trains_and_writes_its_files(colour_data, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "train.py", *train_args(colour_data, out, "--epochs", "1")]
    r = subprocess.run(" ".join(map(str, command)) + " 2>&-", shell=True, cwd=ROOT, capture_output=False,
                       stdout=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 0 and (out / "best.pth").is_file() and (out / "metrics.csv").is_file()
    missing = tmp_path / "nope.jpg"  # and an error is not lost: it goes to stdout
    r = subprocess.run(f"{sys.executable} predict.py {missing} --weights {out / 'best.pth'} --no-show 2>&-",
                       shell=True, cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 1 and f"{missing}: " in r.stdout


# ---------------------------------------------------------------- the web page
def test_the_model_card_shows_user_names_as_text(trained, tmp_path):
    app = pytest.importorskip("app")
    pytest.importorskip("gradio")
    weights = tmp_path / "my`model<img src=x onerror=alert(1)>.pth"
    ckpt = torch.load(trained[0] / "best.pth", weights_only=True)
    ckpt["config"]["data"] = "/photos/data`<b>bold<img src=y>$x$"
    torch.save(ckpt | {"classes": ["*a*", "b_c_", "[d](http://e)"]}, weights)
    card = app.Page(predict.load_classifier(str(weights)), max_upload_mb=20).card()
    for raw in ("`", "<img", "<b>", "$x$", "*a*", "[d]"):
        assert raw not in card, raw
    assert "my&#96;model&#60;img src=x onerror=alert(1)&#62;.pth" in card and "data&#96;&#60;b&#62;bold" in card

"""Round three of hostile inputs (issue #33): Chinese class names in every figure and column,
a locale that cannot read them, runs that explode, two writers on one file, phone photos,
spreadsheet cells, long names, repeated and retried photos, ONNX options and metadata, a
dead display, and the web page's threshold and header. Each test plants the case, runs the
real command and checks its exit code and the message or the file it leaves."""
import codecs
import csv
import fcntl
import json
import os
import shutil
import subprocess
import sys
import warnings

import matplotlib
import pytest
import torch
from PIL import Image

import evaluate
import export
import label_issues
import predict
import train
from alexnet import figures, folders, images, outputs
from conftest import ROOT, make_colour_folder, one_error_line, run_train, train_args

CHINESE = ["玫瑰", "郁金香", "向日葵"]  # rose, tulip, sunflower: the tutorial readers' own folder names


def cli(capsys, module, *argv) -> tuple[int, str, str]:
    code = module.cli([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def with_classes(weights, names: list[str], path, **fields):
    """A copy of a checkpoint whose classes are called ``names`` (and other fields changed)."""
    torch.save(torch.load(weights, weights_only=True) | {"classes": names, **fields}, path)
    return path


def cjk_font_installed() -> bool:
    figures.setup_fonts()
    return len(matplotlib.rcParams["font.family"]) > 1


# ---------------------------------------------------------------- Chinese class names
@pytest.mark.slow
def test_chinese_labels_are_drawn_with_a_cjk_font_and_line_up_in_the_console(trained, colour_data, tmp_path,
                                                                             monkeypatch, capsys):
    if not cjk_font_installed():
        pytest.skip("no CJK font installed (Debian: apt-get install fonts-noto-cjk, as .ci/run does)")
    monkeypatch.setitem(figures._fonts, "hinted", False)
    out, _ = trained
    weights = with_classes(out / "best.pth", ["玫瑰", "郁金香", "rose"], tmp_path / "zh.pth")
    photo = colour_data / "val" / "red" / "red_0.jpg"
    with warnings.catch_warnings(record=True) as caught:  # pytest.ini hides glyph warnings: look at them here
        warnings.simplefilter("always")
        code, stdout, err = cli(capsys, predict, photo, "--weights", weights, "--save", tmp_path / "fig.png",
                                "--no-show")
        figures.plot_confusion(torch.eye(3, dtype=torch.long), CHINESE, tmp_path / "confusion.png", "zh")
    assert code == 0 and (tmp_path / "fig.png").stat().st_size and (tmp_path / "confusion.png").stat().st_size
    assert not [w for w in caught if "missing from font" in str(w.message)] and figures.NO_FONT_HINT not in err
    rows = [line for line in stdout.splitlines() if line.startswith("    ")]
    assert len(rows) == 3
    columns = {folders.width(line.rsplit(" ", 1)[0]) for line in rows}  # where each probability starts
    assert len(columns) == 1, rows


def test_without_a_cjk_font_one_line_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(figures, "CJK_FONTS", ())
    monkeypatch.setattr(figures, "CJK_FILES", ("no-such-font",))
    monkeypatch.setitem(figures._fonts, "ready", False)
    monkeypatch.setitem(figures._fonts, "hinted", False)
    monkeypatch.setitem(matplotlib.rcParams, "font.family", ["DejaVu Sans"])
    for n in range(2):
        figures.plot_confusion(torch.eye(3, dtype=torch.long), CHINESE, tmp_path / f"c{n}.png", "zh")
    err = capsys.readouterr().err
    assert err == figures.NO_FONT_HINT + "\n" and "fonts-noto-cjk" in err


def test_a_locale_that_cannot_read_chinese_names_is_one_line(tmp_path):
    raw = tmp_path / "raw"
    for name in CHINESE[:2]:
        (raw / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (40 * i, 80, 120)).save(raw / name / f"{i}.jpg")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_") and k != "LANG"}
    env |= {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    encoding = subprocess.run([sys.executable, "-c", "import sys; print(sys.getfilesystemencoding())"],
                              capture_output=True, text=True, env=env).stdout.strip()
    if encoding.lower().replace("-", "") == "utf8":
        pytest.skip("this Python reads file names as UTF-8 even under LC_ALL=C")
    r = subprocess.run([sys.executable, str(ROOT / "data_set" / "split_data.py"), str(raw), "--dest",
                        str(tmp_path / "split")], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "PYTHONUTF8=1" in one_error_line(r.stderr) and not (tmp_path / "split").exists()


# ---------------------------------------------------------------- runs that go wrong
def test_a_loss_that_explodes_stops_the_run_with_a_lower_lr_to_try(colour_data, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = cli(capsys, train, *train_args(colour_data, out, "--lr", "10", "--epochs", "5"))
    assert code == 1 and err.count("\n") == 1, err
    assert "training diverged at --lr 10;" in err and "the same command with --lr 1" in err.split(";")[-1]
    assert "run the same command again" not in err and "--resume" not in err
    if (out / "best.pth").exists():  # an epoch before the explosion: never one that diverged
        kept = torch.load(out / "best.pth", weights_only=True)
        assert all(torch.isfinite(v).all() for v in kept["model"].values()) and f"keep epoch {kept['epoch']}" in err


@pytest.mark.parametrize("plant, message", [
    (lambda train_dir: (train_dir / "sunflower").write_bytes(b"\xff\xd8\xff"), "a file, not a folder, where class"),
    (lambda train_dir: (train_dir / "sunflower.zip").write_bytes(b"PK\x03\x04"), "an archive where class folders"),
    (lambda train_dir: (train_dir / "sunflower").symlink_to(train_dir / "gone"), "which does not exist, where a class"),
    (lambda train_dir: shutil.copy(train_dir / "red" / "red_0.jpg", train_dir / "photo.jpg"),
     "an image outside any class folder"),
])
def test_a_file_where_a_class_folder_belongs_is_named(plant, message, tmp_path, capsys):
    data = make_colour_folder(tmp_path / "d", n_train=2, n_val=1)
    plant(data / "train")
    code, _, err = cli(capsys, train, *train_args(data, tmp_path / "out"))
    assert code == 2 and message in one_error_line(err) and str(data / "train") in err
    assert not (tmp_path / "out").exists()


def test_other_files_beside_the_classes_are_listed_in_one_line(tmp_path):
    data = make_colour_folder(tmp_path / "d", n_train=2, n_val=1)
    (data / "train" / "LICENSE.txt").write_text("CC-BY")
    said = []
    assert folders.find_classes(str(data / "train"), said.append) == ["blue", "green", "red"]
    assert said == [f"{data / 'train'}: left out 1 file(s) that are no class folders: LICENSE.txt"]


# ---------------------------------------------------------------- two writers, one file
def test_a_second_writer_of_a_predictions_file_is_refused(trained, colour_data, tmp_path, capsys):
    out, _ = trained
    preds = tmp_path / "p.csv"
    assert predict.cli([str(colour_data / "val"), "--weights", str(out / "best.pth"), "--output", str(preds)]) == 0
    before = preds.read_bytes()
    with open(preds, "a+b") as held:  # another run's hold on the file
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        capsys.readouterr()
        code, _, err = cli(capsys, predict, colour_data / "val", "--weights", out / "best.pth", "--output", preds)
    assert code == 2 and "another predict.py is writing this file" in one_error_line(err)
    assert preds.read_bytes() == before


def test_calibrating_a_model_that_a_running_train_py_writes_is_refused(trained, colour_data, tmp_path, capsys):
    out, _ = trained
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(out / "best.pth", run / "best.pth")
    before = (run / "best.pth").read_bytes()
    with open(run / outputs.LOCK_NAME, "a+") as held:  # train.py's lock, as outputs.output_lock takes it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = cli(capsys, evaluate, "--weights", run / "best.pth", "--calibrate", "--data",
                           colour_data / "val", "--output-dir", tmp_path / "r", "--neighbours", "0", "--quiet")
    assert code != 0 and "a train.py run is writing to" in err and (run / "best.pth").read_bytes() == before


@pytest.mark.slow
def test_best_and_last_are_two_files_and_every_hint_is_a_command_that_works(colour_data, tmp_path, capsys):
    out = tmp_path / "run"
    run_train(train_args(colour_data, out, "--epochs", "1"))
    best, last = os.stat(out / "best.pth"), os.stat(out / "last.pth")
    assert best.st_ino != last.st_ino and best.st_nlink == last.st_nlink == 1
    (out / "last.pth").unlink()
    capsys.readouterr()
    code, _, err = cli(capsys, train, *train_args(colour_data, out, "--epochs", "2", "--resume", "auto"))
    line = one_error_line(err)
    assert code == 2 and f"--weights {out / 'best.pth'} --output-dir OTHER" in line and "--resume" not in line
    assert run_train(train_args(colour_data, tmp_path / "other", "--epochs", "1", "--weights",
                                str(out / "best.pth")))["best_epoch"] == 1


# ---------------------------------------------------------------- files
def test_a_phone_photo_over_the_pixel_limit_is_read_at_a_reduced_scale(trained, tmp_path, monkeypatch, capsys):
    """Pillow's limit lowered to 1 Mpx stands for its 89 Mpx: a 4.3 Mpx JPEG (over twice the
    limit, which Image.open refuses) and a 1.3 Mpx one (over it) are decoded at 1/4 and 1/2."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    out, _ = trained
    sizes = {"huge.jpg": (2400, 1800), "big.jpg": (1300, 1000)}
    for name, size in sizes.items():
        Image.new("RGB", size, (200, 30, 30)).save(tmp_path / name, quality=90)
    Image.new("RGB", (1300, 1000), (200, 30, 30)).save(tmp_path / "big.png")
    assert images.open_rgb(str(tmp_path / "huge.jpg")).size == (600, 450)
    assert images.open_rgb(str(tmp_path / "big.jpg")).size == (650, 500)
    code, stdout, err = cli(capsys, predict, tmp_path / "huge.jpg", tmp_path / "big.jpg", tmp_path / "big.png",
                            "--weights", out / "best.pth", "--no-show")
    assert code == 1 and stdout.count(": red ") == 2, stdout
    assert f"{tmp_path / 'big.png'}: 1,300,000 pixels, over the 1,000,000 an image may have here" in err
    import app

    page = app.Page(predict.load_classifier(str(out / "best.pth")), max_upload_mb=20)
    assert page.open(str(tmp_path / "huge.jpg"), "huge.jpg").size == (600, 450)


@pytest.mark.slow
def test_spreadsheet_formulas_are_escaped_in_every_csv(trained, colour_data, tmp_path, capsys):
    """OWASP's rule: a cell starting with = + - @ gets a leading quote; the files start with a
    byte-order mark (Excel reads them as UTF-8), and predict.py reads its own rows back."""
    out, _ = trained
    names = ["=HYPERLINK(\"x\")", "+1", "@sum"]
    weights = with_classes(out / "best.pth", names, tmp_path / "evil.pth")
    val = tmp_path / "val"
    for name, colour in zip(names, ["blue", "green", "red"]):
        shutil.copytree(colour_data / "val" / colour, val / name)
    shutil.copy(val / "+1" / "green_0.jpg", val / "+1" / "-photo.jpg")
    preds = tmp_path / "p.csv"
    assert predict.cli([str(val / "+1" / "-photo.jpg"), "--weights", str(weights), "--output", str(preds)]) == 0
    raw = preds.read_bytes()
    assert raw.startswith(codecs.BOM_UTF8)
    cells = [c for row in csv.reader(raw.decode("utf-8-sig").splitlines()) for c in row]
    assert not [c for c in cells if c.startswith(outputs.FORMULA_START)], cells
    assert "'=HYPERLINK(\"x\")" in cells and "'+1" in cells
    assert "already there" in cli(capsys, predict, val / "+1" / "-photo.jpg", "--weights", weights, "--output",
                                  preds)[1]  # read back: its path is known, so nothing is classified again
    assert evaluate.cli(["--weights", str(weights), "--data", str(val), "--output-dir", str(tmp_path / "r"),
                         "--neighbours", "0", "--quiet", "--topk", "2"]) == 0
    for name in ("per_class.csv", "predictions.csv"):
        with open(tmp_path / "r" / name, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
        assert (tmp_path / "r" / name).read_bytes().startswith(codecs.BOM_UTF8)
        assert not [c for row in rows for c in row if c.startswith(outputs.FORMULA_START)], name
    with open(tmp_path / "r" / "predictions.csv", newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert [k for k in rows[0] if k.startswith("top_")] == ["top_1", "top_2"]  # a column each, never joined
    assert {r["top_1"] for r in rows} | {r["top_2"] for r in rows} <= {"'" + n for n in names}
    label_issues.write_csv(tmp_path / "li.csv", [0], [("-x.jpg", 0)], names, [[0.2, 0.5, 0.3]], {"score": [0.1]}, set())
    with open(tmp_path / "li.csv", newline="", encoding="utf-8-sig") as f:
        assert list(csv.reader(f))[1][:3] == ["'-x.jpg", "'=HYPERLINK(\"x\")", "'+1"]


@pytest.mark.slow
def test_a_legal_252_character_output_name_is_written_and_a_longer_one_is_one_line(trained, colour_data, tmp_path,
                                                                                  capsys):
    out, _ = trained
    photo = colour_data / "val" / "red" / "red_0.jpg"
    long = "p" * 248  # + ".png" = 252 characters; the file system allows 255
    assert predict.cli([str(photo), "--weights", str(out / "best.pth"), "--save", str(tmp_path / f"{long}.png"),
                        "--no-show"]) == 0
    assert predict.cli([str(photo), "--weights", str(out / "best.pth"), "--output", str(tmp_path / f"{long}.csv")]) == 0
    assert export.cli([str(out / "best.pth"), "-o", str(tmp_path / f"{long[:247]}.onnx")]) == 0
    assert sorted(len(p.name) for p in tmp_path.iterdir()) == [252, 252, 252]
    capsys.readouterr()
    code, _, err = cli(capsys, predict, photo, "--weights", out / "best.pth", "--save", tmp_path / f"{long}1234.png",
                       "--no-show")  # 256: one too many
    assert code == 2 and "the name is 256 bytes; a file name can have at most 255" in one_error_line(err)


def test_each_photo_gets_one_row_and_a_fixed_file_is_tried_again(trained, colour_data, tmp_path, capsys):
    out, _ = trained
    folder = tmp_path / "photos"
    shutil.copytree(colour_data / "val" / "red", folder)
    broken = folder / "broken.jpg"
    broken.write_bytes(b"not a photo")
    preds = tmp_path / "p.csv"
    first = folder / "red_0.jpg"
    code, stdout, _ = cli(capsys, predict, first, first, folder, "--weights", out / "best.pth", "--output", preds)
    rows = list(csv.DictReader(open(preds, encoding="utf-8-sig")))
    assert code == 1 and len(rows) == len({r["path"] for r in rows}) == 5 and "given twice" in stdout
    shutil.copy(first, broken)  # fixed
    code, stdout, _ = cli(capsys, predict, first, first, folder, "--weights", out / "best.pth", "--output", preds)
    rows = list(csv.DictReader(open(preds, encoding="utf-8-sig")))
    assert code == 0 and "(1 failed before: tried again)" in stdout and len(rows) == 5
    assert not [r for r in rows if r["error"]] and "0 unreadable" in stdout


# ---------------------------------------------------------------- models and options
@pytest.mark.parametrize("opset", ["7", "99"])
def test_an_opset_that_cannot_be_honoured_is_refused(opset, trained, tmp_path, capsys):
    out, _ = trained
    code, _, err = cli(capsys, export, out / "best.pth", "-o", tmp_path / "m.onnx", "--opset", opset)
    assert code == 2 and f"--opset {opset}: must be in 18.." in one_error_line(err) and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_display_whose_x_server_is_gone_gets_the_no_display_hint(trained, colour_data):
    out, _ = trained
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"} | {"DISPLAY": ":93"}  # no X server there
    r = subprocess.run([sys.executable, str(ROOT / "predict.py"), str(colour_data / "val" / "red" / "red_0.jpg"),
                        "--weights", str(out / "best.pth")], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0 and figures.NO_DISPLAY in r.stdout and "non-interactive" not in r.stderr, r.stderr


@pytest.mark.slow
def test_the_page_honours_the_stored_threshold_and_names_no_server_path(trained, colour_data, tmp_path, capsys):
    out, _ = trained
    weights = with_classes(out / "best.pth", ["blue", "green", "red"], tmp_path / "sure.pth", min_confidence=0.999)
    import app

    page = app.Page(predict.load_classifier(str(weights)), max_upload_mb=20)
    photo = str(colour_data / "val" / "red" / "red_0.jpg")
    shown = page.results_html([("red_0.jpg", photo)])
    assert "unknown (top red &lt; 0.999)" in shown
    assert page.answer(page.classify(page.open(photo, "red_0.jpg"), "red_0.jpg")[0])["label"] == "unknown"
    card = page.card()
    assert "sure.pth" in card and str(tmp_path) not in card and str(colour_data) not in card and "0.999" in card
    preds = tmp_path / "p.json"
    assert predict.cli([photo, "--weights", str(weights), "--output", str(preds), "--min-confidence", "auto"]) == 0
    before = preds.read_bytes()
    capsys.readouterr()
    code, _, err = cli(capsys, predict, photo, "--weights", weights, "--output", preds, "--min-confidence", "0.5")
    assert code == 2 and "answered with --min-confidence 0.999, this run has 0.5" in one_error_line(err)
    assert preds.read_bytes() == before and json.loads(before)[0]["min_confidence"] == 0.999
    many_digits = with_classes(out / "best.pth", ["blue", "green", "red"], tmp_path / "t.pth",
                               min_confidence=0.31234567891)  # as evaluate.py --store-threshold computes one
    for _ in range(2):  # the second run reads the header's threshold back as the same number
        code, stdout, _ = cli(capsys, predict, photo, "--weights", many_digits, "--output", tmp_path / "t.csv",
                              "--min-confidence", "auto")
    assert code == 0 and "1 image(s) already there" in stdout

"""predict.py as a user runs it: formats, folders, the tutorial's weights, bad input."""
import json
import sys

import pytest
import torch
from PIL import Image

import predict
from conftest import COLOURS, ROOT
from test_model import TutorialAlexNet


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """One image of each awkward kind Pillow can read."""
    d = tmp_path_factory.mktemp("photos")
    red = Image.new("RGB", (90, 70), COLOURS["red"])
    red.save(d / "red.jpg")
    red.convert("RGBA").save(d / "red_rgba.png")
    Image.new("RGB", (80, 80), COLOURS["green"]).convert("L").save(d / "grey.jpg")
    red.convert("P").save(d / "palette.png")
    red.convert("CMYK").save(d / "cmyk.jpg")
    Image.new("RGB", (40, 120), COLOURS["blue"]).save(d / "tall blue 蓝色.jpg")
    return d


def predict_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = predict.cli([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_script_predicts_a_photo_with_the_tutorials_output_and_stays_light(trained, photos):
    """The whole process: exit code, output, and what it imported (torchvision takes over a
    second to import, matplotlib and ImageDraw are not needed without a figure)."""
    out, _ = trained
    code = ("import sys, predict; rc = predict.cli(sys.argv[1:]); "
            "print('loaded:', [m for m in ('torchvision', 'matplotlib', 'PIL.ImageDraw') if m in sys.modules]); "
            "sys.exit(rc)")
    import subprocess

    r = subprocess.run([sys.executable, "-c", code, str(photos / "red.jpg"), "--weights", str(out / "best.pth"),
                        "--no-show"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"{photos / 'red.jpg'}: red ")
    assert float(lines[0].split()[-1]) > 0.5
    listed = [ln.split()[0] for ln in lines[1:4]]
    assert sorted(listed) == sorted(COLOURS) and listed[0] == "red"
    assert abs(sum(float(ln.split()[-1]) for ln in lines[1:4]) - 1) < 0.01
    assert lines[-1] == "loaded: []"


def test_odd_formats_a_folder_topk_tta_and_saved_figure(trained, photos, tmp_path, capsys):
    out, _ = trained
    fig = tmp_path / "fig.png"
    code, stdout, err = predict_cli(capsys, photos, "--weights", out / "best.pth", "--topk", "1", "--tta",
                                    "--save", fig, "--no-show")
    assert code == 0, err
    heads = [ln for ln in stdout.splitlines() if not ln.startswith(" ") and ln.endswith(tuple("0123456789"))]
    assert len(heads) == 6
    top = {ln.rsplit(":", 1)[0].rsplit("/", 1)[-1]: ln.rsplit(":", 1)[1].split()[0] for ln in heads}
    assert top["red_rgba.png"] == top["palette.png"] == top["cmyk.jpg"] == "red"
    assert top["tall blue 蓝色.jpg"] == "blue"
    assert len([ln for ln in stdout.splitlines() if ln.startswith("    ")]) == 6  # --topk 1
    assert fig.read_bytes()[:4] == b"\x89PNG"


def test_no_display_never_blocks(trained, photos, capsys, monkeypatch):
    out, _ = trained
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, stdout, err = predict_cli(capsys, photos / "grey.jpg", "--weights", out / "best.pth")
    assert code == 0, err
    assert "no display" in stdout


def test_tutorial_weights_with_class_indices(tmp_path, photos, capsys, monkeypatch):
    torch.save(TutorialAlexNet(num_classes=5).state_dict(), tmp_path / "AlexNet.pth")
    monkeypatch.chdir(ROOT)  # class_indices.json from the working directory, as in the tutorial
    code, stdout, err = predict_cli(capsys, photos / "red.jpg", "--model_path", tmp_path / "AlexNet.pth", "--no-show")
    assert code == 0, err
    assert {ln.split()[0] for ln in stdout.splitlines()[1:]} == {"daisy", "dandelion", "roses", "sunflowers", "tulips"}
    (tmp_path / "three.json").write_text(json.dumps({"0": "a", "1": "b", "2": "c"}))
    code, _, err = predict_cli(capsys, photos / "red.jpg", "--model_path", tmp_path / "AlexNet.pth",
                               "--class_indices", tmp_path / "three.json", "--no-show")
    assert code == 2
    assert err.strip() == f"error: {tmp_path / 'three.json'}: lists 3 classes, but {tmp_path / 'AlexNet.pth'} has 5 outputs"


def test_some_bad_inputs_the_rest_still_predicted(trained, photos, tmp_path, capsys):
    out, _ = trained
    (tmp_path / "notes.jpg").write_text("not an image")
    code, stdout, err = predict_cli(capsys, photos / "red.jpg", tmp_path / "notes.jpg", tmp_path / "missing.jpg",
                                    "--weights", out / "best.pth", "--no-show")
    assert code == 1
    assert stdout.startswith(f"{photos / 'red.jpg'}: red")
    assert f"error: {tmp_path / 'notes.jpg'}: not a readable image (not an image file)" in err
    assert f"error: {tmp_path / 'missing.jpg'}: no such file or folder" in err


@pytest.mark.parametrize("case", ["truncated", "garbage", "malicious", "missing", "disagreeing", "malformed_json",
                                  "folder"])
def test_unusable_weights_are_one_line_errors(case, trained, photos, tmp_path, capsys):
    out, _ = trained
    weights, extra = tmp_path / "w.pth", []
    marker = tmp_path / "pwned"
    if case == "truncated":
        blob = (out / "best.pth").read_bytes()
        weights.write_bytes(blob[: len(blob) // 2])
    elif case == "garbage":
        weights.write_text("hello")
    elif case == "malicious":
        class Exploit:
            def __reduce__(self):
                return (open, (str(marker), "w"))
        torch.save({"model": Exploit()}, weights)
        assert not marker.exists()
    elif case == "missing":
        weights = tmp_path / "nope.pth"
    elif case == "folder":
        weights = tmp_path
    else:
        weights = out / "best.pth"
        bad = tmp_path / "ci.json"
        bad.write_text('{"0": "red", "1": "green", "2": "blue"}' if case == "disagreeing" else '{"0": "red",')
        extra = ["--class-indices", str(bad)]
    code, _, err = predict_cli(capsys, photos / "red.jpg", "--weights", weights, "--no-show", *extra)
    assert code == 2
    err = err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    named = extra[1] if extra else str(weights)
    assert f"{named}: " in err
    expected = {"truncated": "not a readable checkpoint", "garbage": "not a PyTorch checkpoint at all: it is text",
                "malicious": "refused for safety", "missing": "checkpoint not found", "disagreeing": "disagree",
                "malformed_json": "malformed JSON", "folder": "is a folder"}[case]
    assert expected in err
    assert not marker.exists()  # the pickle's payload never ran



@pytest.mark.parametrize("tta", [False, True])
def test_the_step_by_step_prediction_is_the_batched_one(trained, photos, tta):
    """predict.py's own steps for a few photos (open, transform, batch, eval, softmax) give
    the probabilities of the classifier's batched path, which big folders and ONNX take."""
    from alexnet.classifier import load_classifier, predict_files

    out, _ = trained
    classifier = load_classifier(str(out / "best.pth"), tta=tta)
    files = sorted(str(p) for p in photos.iterdir())
    batched = {path: probs for path, probs, _ in predict_files(classifier, files, batch_size=4)}
    for path in files:
        torch.testing.assert_close(predict.predict_image(classifier, path), batched[path], rtol=0, atol=1e-6)
    assert [path for path, _, err in predict.each_prediction(classifier, files, 16) if err is None] == files

"""Deployment: export.py --int8 and its accuracy guard, predict.py --output (rows, resume after
a kill) and --min-confidence, evaluate.py --ood; bad options are one line before any work."""
import csv
import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

import evaluate
import export
import predict
from alexnet import shapes
from alexnet.classifier import OnnxClassifier, decoded
from conftest import ROOT, make_colour_folder


def cli(capsys, module, *argv) -> tuple[int, str, str]:
    code = module.cli([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def printed_answers(out: str) -> dict[str, list[tuple[str, float]]]:
    """predict.py's console answers: path -> [(class, probability), ...] in its order."""
    answers, path = {}, None
    for line in out.splitlines():
        if line.startswith("    "):
            name, p = line.split()
            answers[path].append((name, float(p)))
        elif ": " in line:
            path = line.rsplit(": ", 1)[0]
            answers[path] = []
    return answers


def csv_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """A folder of 240 small photos (and one unreadable file) to classify into a file."""
    root = make_colour_folder(tmp_path_factory.mktemp("many"), n_train=80, n_val=0, size=40)
    (root / "train" / "red" / "broken.jpg").write_bytes(b"not a jpeg")
    return root / "train"


@pytest.mark.slow
def test_output_rows_equal_the_printed_answers_in_csv_and_json(trained, many, tmp_path, capsys):
    out, _ = trained
    weights = out / "best.pth"
    code, printed, _ = cli(capsys, predict, many, "--weights", weights, "--topk", "2", "--no-show")
    assert code == 1  # the broken file
    answers = printed_answers(printed)
    assert len(answers) == 240
    for name in ("p.csv", "p.json"):
        code, stdout, err = cli(capsys, predict, many, "--weights", weights, "--topk", "2", "--output",
                                tmp_path / name)
        assert code == 1 and "broken.jpg" in (tmp_path / name).read_text()
        assert "wrote 241 rows" in stdout and stdout.count("\n") == 1, stdout  # no per-image lines
        rows = csv_rows(tmp_path / name) if name.endswith(".csv") else json.loads((tmp_path / name).read_text())
        assert len(rows) == 241
        for r in rows:
            if name.endswith(".csv"):
                top = [(r["class_1"], float(r["prob_1"])), (r["class_2"], float(r["prob_2"]))] if r["class_1"] else []
                error, unknown = r["error"], r["unknown"] == "1"
            else:
                top, error, unknown = [tuple(t) for t in r["top"]], r["error"], r["unknown"]
            assert not unknown
            if r["path"].endswith("broken.jpg"):
                assert error and not top
                continue
            assert not error
            assert [c for c, _ in top] == [c for c, _ in answers[r["path"]]]
            assert [round(p, 3) for _, p in top] == pytest.approx([p for _, p in answers[r["path"]]], abs=1.01e-3)


@pytest.mark.slow
def test_a_run_killed_midway_continues_to_the_same_file(trained, many, tmp_path):
    """kill -9 after some rows; the same command finishes the file, which then equals an
    uninterrupted run's (batch size 1 both times, so every image meets the same arithmetic)."""
    out, _ = trained
    for name in ("p.csv", "p.json"):
        whole, cut = tmp_path / f"whole-{name}", tmp_path / name
        argv = [sys.executable, str(ROOT / "predict.py"), str(many), "--weights", str(out / "best.pth"),
                "--batch-size", "1"]
        assert subprocess.run([*argv, "--output", str(whole)], cwd=ROOT, capture_output=True).returncode == 1
        proc = subprocess.Popen([*argv, "--output", str(cut)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not cut.exists() or cut.read_text().count("\n") < 20):
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        written = cut.read_text().count("\n")
        assert 20 <= written < 200, written  # interrupted midway
        r = subprocess.run([*argv, "--output", str(cut)], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 1 and "already there" in r.stdout, r.stdout + r.stderr
        assert cut.read_bytes() == whole.read_bytes()


@pytest.mark.slow
def test_a_half_written_row_is_dropped_and_other_files_are_never_touched(trained, many, tmp_path, capsys):
    out, _ = trained
    weights, path = out / "best.pth", tmp_path / "p.csv"
    cli(capsys, predict, many, "--weights", weights, "--output", path, "--batch-size", "1")
    whole = path.read_text()
    lines = whole.splitlines(keepends=True)
    path.write_text("".join(lines[:51]) + lines[51][:17])  # the header, 50 rows and a third of one
    code, stdout, _ = cli(capsys, predict, many, "--weights", weights, "--output", path, "--batch-size", "1")
    assert code == 1 and "50 image(s) already there; classifying the other 191" in stdout
    assert path.read_text() == whole
    code, _, err = cli(capsys, predict, many, "--weights", weights, "--output", path, "--topk", "1")
    assert code == 2 and "other columns" in err and path.read_text() == whole  # another --topk
    notes = tmp_path / "notes.csv"
    notes.write_text("name,age\nada,36\n")
    code, _, err = cli(capsys, predict, many, "--weights", weights, "--output", notes)
    assert code == 2 and "not a CSV predictions file" in err and notes.read_text() == "name,age\nada,36\n"


def test_min_confidence_answers_unknown_below_it(trained, colour_data, tmp_path, capsys):
    out, _ = trained
    weights = out / "best.pth"
    folder = colour_data / "val"
    _, printed, _ = cli(capsys, predict, folder, "--weights", weights, "--no-show")
    top = {path: ps[0][1] for path, ps in printed_answers(printed).items()}
    distinct = sorted(set(top.values()))
    # halfway between two printed (rounded) values, so no true probability lies on the other side
    threshold = (distinct[len(distinct) // 2 - 1] + distinct[len(distinct) // 2]) / 2
    code, printed, _ = cli(capsys, predict, folder, "--weights", weights, "--no-show", "--min-confidence",
                           str(threshold))
    assert code == 0
    heads = [ln for ln in printed.splitlines() if not ln.startswith("    ")]
    for line in heads:
        path = line.split(": ")[0]
        assert (": unknown (top " in line) == (top[path] < threshold), line
    assert sum(": unknown" in ln for ln in heads) == sum(p < threshold for p in top.values()) > 0
    code, _, err = cli(capsys, predict, folder, "--weights", weights, "--min-confidence", "auto")
    assert code == 2 and err.count("\n") == 1 and "stores no threshold" in err


@pytest.mark.slow
def test_ood_scores_the_shapes_against_the_colours_and_stores_a_threshold(trained, colour_data, tmp_path, capsys):
    out, _ = trained
    weights = tmp_path / "model.pth"
    shutil.copy(out / "best.pth", weights)
    ood = tmp_path / "shapes"
    shapes.make_shapes(ood, train_per_class=0, val_per_class=4, size=72)
    code, stdout, err = cli(capsys, evaluate, "--weights", weights, "--data", colour_data, "--ood", ood,
                            "--store-threshold", "--output-dir", tmp_path / "eval", "--neighbours", "0", "--quiet")
    assert code == 0, err
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())["ood"]
    assert summary["images"] == 20 and 0 <= summary["auroc"] <= 1 and 0 < summary["threshold"] < 1
    assert summary["rejected_val"] <= 0.05  # at most the target share of the val/ images
    assert (tmp_path / "eval" / "ood.png").stat().st_size > 0
    assert "written into" in stdout
    code, printed, _ = cli(capsys, predict, ood, "--weights", weights, "--min-confidence", "auto", "--no-show")
    unknown = sum(": unknown" in ln for ln in printed.splitlines())
    assert code == 0 and unknown == round(summary["rejected_unknown"] * 20)
    onnx_path = tmp_path / "model.onnx"
    assert export.cli([str(weights), "-o", str(onnx_path)]) == 0
    capsys.readouterr()
    code, printed_onnx, _ = cli(capsys, predict, ood, "--weights", onnx_path, "--min-confidence", "auto", "--no-show")
    assert code == 0 and sum(": unknown" in ln for ln in printed_onnx.splitlines()) == unknown


@pytest.fixture(scope="module")
def int8_data(tmp_path_factory):
    """The colours with more validation images, so that one image is a small step of top-1."""
    return make_colour_folder(tmp_path_factory.mktemp("int8"), n_train=10, n_val=20)


@pytest.mark.slow
def test_int8_export_is_guarded_by_accuracy(trained, int8_data, tmp_path, capsys):
    out, _ = trained
    weights = out / "best.pth"
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(flat / "grey.png")  # ranges from one constant image
    broken = tmp_path / "broken.int8.onnx"
    code, stdout, err = cli(capsys, export, weights, "-o", broken, "--int8", "--data", int8_data, "--calibration",
                            flat, "--max-drop", "5")
    assert code == 1 and not broken.exists() and "not written" in err, stdout + err
    good = tmp_path / "good.int8.onnx"
    code, stdout, err = cli(capsys, export, weights, "-o", good, "--int8", "--data", int8_data, "--max-drop", "5")
    assert code == 0, stdout + err
    session = OnnxClassifier(str(good), False, None).session
    info = json.loads(session.get_modelmeta().custom_metadata_map["alexnet"])
    assert info["quantization"]["weights"].startswith("int8") and info["quantization"]["calibration_images"] == 30
    assert info["top1_fp32"] - info["top1_int8"] <= 0.05 and info["top1_images"] == 60
    assert any(node.op_type == "QuantizeLinear" for node in __import__("onnx").load(str(good)).graph.node)
    assert good.stat().st_size < 0.4 * (out / "best.pth").stat().st_size
    code, printed, _ = cli(capsys, predict, int8_data / "val" / "red", "--weights", good, "--topk", "1", "--no-show")
    heads = [ln for ln in printed.splitlines() if not ln.startswith("    ")]
    assert code == 0 and len(heads) == 20 and sum(": red " in ln for ln in heads) >= 15
    code, stdout, _ = cli(capsys, evaluate, "--weights", good, "--data", int8_data / "val", "--output-dir",
                          tmp_path / "eval", "--quiet")
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert code == 0 and summary["top1"] == pytest.approx(info["top1_int8"])  # the same images, the same answers
    import app

    assert f"int8: top-1 {info['top1_int8']:.3f}" in app.Page(predict.load_classifier(str(good)), 20).card()


@pytest.mark.parametrize("script, argv, expected", [
    (export, ["--int8", "--max-drop", "-1"], "--max-drop -1.0: must be in 0..100"),
    (export, ["--int8", "--calibration-images", "0"], "--calibration-images 0: must be in 1..100000"),
    (predict, ["x.jpg", "--min-confidence", "1.5"], "--min-confidence 1.5: must be a number in (0, 1) or auto"),
    (predict, ["x.jpg", "--min-confidence", "often"], "--min-confidence often: must be a number in (0, 1) or auto"),
    (predict, ["x.jpg", "--output", "preds.xlsx"], "unknown extension '.xlsx'; use .csv or .json"),
    (predict, ["x.jpg", "--output", "no/such/folder/p.csv"], "folder no/such/folder does not exist"),
    (evaluate, ["--ood", "x", "--false-rejection", "0"], "--false-rejection 0.0: must be in (0, 1)"),
    (evaluate, ["--store-threshold"], "--store-threshold: needs --ood FOLDER"),
])
def test_bad_options_are_one_line_before_any_work(script, argv, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the weights do not exist: the option is checked before they are read
    code, _, err = cli(capsys, script, *argv, *(["--weights", "missing.pth"] if script is not export else
                                                 ["missing.pth"]))
    assert code == 2 and err.count("\n") == 1 and expected in err, err


def test_an_empty_ood_folder_is_one_line(trained, colour_data, tmp_path, capsys):
    out, _ = trained
    (tmp_path / "empty").mkdir()
    code, _, err = cli(capsys, evaluate, "--weights", out / "best.pth", "--data", colour_data, "--ood",
                       tmp_path / "empty", "--output-dir", tmp_path / "eval")
    assert code == 2 and err.count("\n") == 1 and "no images inside" in err
    assert not (tmp_path / "eval").exists()


def test_decoding_threads_keep_the_files_order_and_their_errors(trained, many):
    out, _ = trained
    classifier = predict.load_classifier(str(out / "best.pth"))
    files = sorted(str(p) for p in many.rglob("*.jpg"))
    rows = list(decoded(classifier, files, 7))
    assert [p for p, _, _ in rows] == files
    assert [p for p, _, err in rows if err] == [f for f in files if f.endswith("broken.jpg")]
    serial = [classifier.load(f) for f in files[:5]]
    assert all((a == b).all() for a, (_, b, _) in zip(serial, rows[:5]))


@pytest.mark.slow
def test_bench_formats_table(trained, int8_data, capsys):
    import bench

    out, _ = trained
    assert bench.main(["--formats", str(out / "best.pth"), "--data", str(int8_data), "--repeats", "1",
                       "--predict-runs", "1", "--batch-size", "8", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.split("\n", 1)[1])  # after the CPU line
    formats = res["formats"]
    assert {"PyTorch fp32", "ONNX fp32", "ONNX int8"} <= set(formats) and res["images"] == 60
    assert formats["ONNX fp32"]["top1"] == formats["PyTorch fp32"]["top1"]  # the same model, exported exactly
    assert formats["ONNX int8"]["file_mib"] < formats["ONNX fp32"]["file_mib"]
    assert all(r["images_per_s"] > 0 for r in formats.values())
    assert "int8:" in res["cpu"] and "bf16:" in res["cpu"]

"""evaluate.py and Grad-CAM: metrics against hand-worked values, the report files, the
figures, nearest neighbours, agreement with train.py and predict.py, bad input."""
import csv
import json
import shutil

import pytest
import torch
from PIL import Image

import evaluate
from alexnet import datasets, figures, images, stats, transforms
import predict
from conftest import COLOURS, make_colour_folder, run_train, train_args
from model import AlexNet, grad_cam


def test_metrics_match_values_worked_out_by_hand():
    # 3 classes; class 2 is never predicted; 9 images
    targets = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = torch.tensor([0, 0, 1, 1, 1, 0, 1, 0, 1])
    confusion = stats.confusion_matrix(targets, predicted, 3)
    assert confusion.tolist() == [[2, 1, 0], [0, 2, 0], [2, 2, 0]]
    assert confusion.sum() == 9
    table = evaluate.class_metrics(confusion)
    assert table["precision"] == pytest.approx([2 / 4, 2 / 5, 0.0])  # class 2: no predictions, precision 0
    assert table["recall"] == pytest.approx([2 / 3, 1.0, 0.0])
    f1 = [2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3), 2 * 0.4 * 1 / 1.4, 0.0]
    assert table["f1"] == pytest.approx(f1)
    assert table["support"] == [3, 2, 4]
    assert table["macro_f1"] == pytest.approx(sum(f1) / 3)
    top1 = (targets == predicted).double().mean().item()
    assert table["weighted_recall"] == pytest.approx(top1)  # support-weighted recall is top-1
    assert table["weighted_precision"] == pytest.approx((3 * 0.5 + 2 * 0.4) / 9)
    assert evaluate.most_confused(confusion, ["a", "b", "c"], 3) == [("c", "a", 2), ("c", "b", 2), ("a", "b", 1)]


def test_nearest_neighbours_equal_a_brute_force_argsort():
    gen = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(1000, 16, generator=gen), torch.randn(7, 16, generator=gen)
    expected = torch.cdist(queries, bank).argsort(dim=1, stable=True)[:, :6]
    assert torch.equal(evaluate.nearest(queries, bank, 6, chunk=97), expected)  # chunks that do not divide 1000
    assert torch.equal(evaluate.nearest(queries, bank, 6), expected)


@pytest.mark.slow
def test_a_100_class_confusion_matrix_renders(tmp_path):
    names = [f"class number {i:03d}" for i in range(100)]
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 100, (3000,), generator=gen)
    predicted = torch.where(torch.rand(3000, generator=gen) < 0.7, targets, torch.randint(0, 100, (3000,), generator=gen))
    figures.plot_confusion(stats.confusion_matrix(targets, predicted, 100), names, tmp_path / "cm.png", "top-1")
    with Image.open(tmp_path / "cm.png") as img:
        assert img.width > 2000 and img.height > 1000


@pytest.mark.slow
def test_evaluate_end_to_end_agrees_with_train_and_predict(trained, colour_data, tmp_path, capsys):
    out, summary = trained
    report = tmp_path / "report"
    assert evaluate.cli(["--weights", str(out / "best.pth"), "--output-dir", str(report), "--neighbours", "2",
                         "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert "top-1" in stdout and "macro avg" in stdout and "weighted avg" in stdout
    result = json.loads((report / "summary.json").read_text())
    assert {"top1", "top3", "macro_f1", "images", "weights", "data"} <= set(result)
    assert result["top1"] == pytest.approx(summary["best_acc"])  # the same transform on the same images as train.py
    assert result["images"] == 12 and result["data"] == str(colour_data / "val")
    rows = list(csv.DictReader(open(report / "predictions.csv", encoding="utf-8-sig")))
    assert len(rows) == 12
    assert [r["class"] for r in csv.DictReader(open(report / "per_class.csv", encoding="utf-8-sig"))] == \
        [*sorted(COLOURS), "macro avg", "weighted avg"]
    classifier = predict.load_classifier(str(out / "best.pth"))
    theirs = {path: probs for path, probs, _ in predict.predict_files(classifier, [r["path"] for r in rows], 5)}
    for r in rows:
        probs = theirs[r["path"]]
        assert classifier.names[max(range(3), key=probs.__getitem__)] == r["predicted"]
        assert probs[classifier.names.index(r["true"])] == pytest.approx(float(r["true_probability"]), abs=1e-5)
    for name in ("confusion_matrix.png", "conv1_filters.png", "neighbours.png"):
        with Image.open(report / name) as img:
            assert img.format == "PNG" and img.width >= 300 and img.height >= 200, name


def test_mistakes_figure_shows_the_highest_losses(tmp_path):
    split_dir = make_colour_folder(tmp_path / "d", n_train=1, n_val=2) / "val"
    samples = sorted((str(p), i) for i, c in enumerate(sorted(COLOURS)) for p in (split_dir / c).iterdir())
    split = datasets.CachedImageFolder(str(split_dir), datasets.CachePolicy(None, 0), transforms.EvalTransform(64),
                                       log=lambda line: None)
    assert split.samples == samples
    targets = torch.tensor([t for _, t in samples])
    probs = torch.full((6, 3), 0.1)
    probs[torch.arange(6), (targets + 1) % 3] = 0.8  # every one wrong
    assert figures.plot_mistakes(split, probs, targets, sorted(COLOURS), 4, tmp_path / "m.png") == 4
    assert Image.open(tmp_path / "m.png").width > 300


@pytest.mark.slow
def test_bad_input(trained, colour_data, tmp_path, capsys):
    out, _ = trained
    weights = ["--weights", str(out / "best.pth"), "--output-dir", str(tmp_path / "r"), "--neighbours", "0",
               "--mistakes", "0", "--quiet"]
    assert evaluate.cli(["--weights", str(tmp_path / "none.pth"), "--data", str(colour_data)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    odd = make_colour_folder(tmp_path / "odd", n_train=1, n_val=2) / "val"
    (odd / "red").rename(odd / "purple")
    assert evaluate.cli([*weights, "--data", str(odd)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the model does not know class 'purple'" in err
    assert evaluate.cli([*weights, "--data", str(odd), "--skip-unknown"]) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["images"] == 4
    (tmp_path / "empty").mkdir()
    assert evaluate.cli([*weights, "--data", str(tmp_path / "empty")]) == 2
    assert "no class folders inside" in capsys.readouterr().err
    shutil.copytree(colour_data / "val", tmp_path / "some bad" / "val")
    (tmp_path / "some bad" / "val" / "red" / "broken.jpg").write_bytes(b"not a picture")
    assert evaluate.cli([*weights, "--data", str(tmp_path / "some bad")]) == 1
    captured = capsys.readouterr()
    assert "broken.jpg: not a readable image" in captured.out and "1 image(s) could not be read" in captured.err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["images"] == 12


@pytest.mark.slow
def test_grad_cam_has_the_image_size_and_looks_at_the_half_that_carries_the_class(tmp_path):
    """Two classes told apart only by the right half's colour; the left half is random colour."""
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 24), ("val", 6)):
        for name, rgb in (("red", (220, 40, 40)), ("blue", (30, 60, 220))):
            folder = tmp_path / "halves" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = torch.randint(0, 256, (3, 96, 96), dtype=torch.uint8, generator=gen)
                img[:, :, 48:] = (torch.tensor(rgb).view(3, 1, 1) + torch.randn(3, 96, 48, generator=gen) * 20
                                  ).clamp(0, 255).to(torch.uint8)
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    summary = run_train(train_args(tmp_path / "halves", tmp_path / "run", "--img-size", "96", "--val-resize", "0",
                                   "--epochs", "6", "--crop-scale", "0.9", "1"))
    assert summary["best_acc"] == 1.0
    classifier = predict.load_classifier(str(tmp_path / "run" / "best.pth"))
    masses = []
    for path in sorted((tmp_path / "halves" / "val").rglob("*.png")):
        view, heat = classifier.grad_cam(images.open_rgb(str(path)), classifier.names.index(path.parent.name))
        assert heat.shape == view.shape[:2] == (96, 96)
        assert heat.min() >= 0 and heat.max() == pytest.approx(1.0)
        masses.append(heat[:, 48:].sum() / heat.sum())
    assert sum(masses) / len(masses) > 0.6, masses


def test_grad_cam_of_an_untrained_net_is_still_a_normalised_map():
    net = AlexNet(num_classes=4).eval()
    heat = grad_cam(net, torch.randn(3, 3, 80, 100), torch.tensor([0, 1, 3]))
    assert heat.shape == (3, 80, 100) and heat.min() >= 0 and heat.amax(dim=(1, 2)).le(1.0).all()


@pytest.mark.slow
def test_predict_cam_draws_the_overlays(trained, colour_data, tmp_path, capsys):
    out, _ = trained
    fig = tmp_path / "cam.png"
    assert predict.cli([str(colour_data / "val" / "red"), "--weights", str(out / "best.pth"), "--cam", "--save",
                        str(fig), "--no-show"]) == 0
    assert Image.open(fig).width > 300 and "figure saved" in capsys.readouterr().out

"""Honest numbers: the intervals, the paired test and the calibration against independent
computations; the held-out test split end to end (split_data.py --test, train.py never
reading it, evaluate.py scoring it), --compare, --calibrate on every path, tools/seeds.py."""
import csv
import json
import math
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from PIL import Image

import evaluate
import export
import predict
from alexnet import stats
from conftest import ROOT, make_colour_folder, run_train, train_args
from alexnet.errors import CheckpointError
from alexnet.checkpoint import load_checkpoint
from model import calibrated

sys.path.insert(0, str(ROOT / "data_set"))
sys.path.insert(0, str(ROOT / "tools"))
import seeds  # noqa: E402
import split_data  # noqa: E402


# ---------------------------------------------------------------- the statistics
def closed_form_wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson interval as stats.wilson computed it before it became scipy's binomtest."""
    p = successes / n
    denom = 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / denom, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@pytest.mark.slow
def test_wilson_covers_p_about_95_percent_of_the_time_and_matches_the_closed_form():
    gen = torch.Generator().manual_seed(0)
    n, p = 309, 0.75
    successes = (torch.rand(2000, n, generator=gen) < p).sum(1).tolist()
    covered = sum(lo <= p <= hi for lo, hi in (stats.wilson(s, n) for s in successes)) / 2000
    assert 0.93 <= covered <= 0.97
    for s, n in [(0, 10), (1, 10), (10, 10), (231, 309), (5, 7), (999, 1000), (0, 1), (12, 25)]:
        assert stats.wilson(s, n) == pytest.approx(closed_form_wilson(s, n), abs=1e-12), (s, n)
    assert stats.wilson(0, 0) == (0.0, 1.0)
    lo, hi = stats.wilson(231, 309)
    assert lo < 231 / 309 < hi and hi - lo == pytest.approx(0.0963, abs=0.001)  # about ±4.8 points at n = 309


def test_bootstrap_of_a_mean_matches_the_exact_binomial_quantiles():
    """Resampling 75 ones and 25 zeros gives Binomial(100, 0.75) / 100 exactly: its 2.5% and
    97.5% quantiles, summed here from the binomial formula, are what the bootstrap must find."""
    values = torch.tensor([1.0] * 75 + [0.0] * 25)
    low, high = stats.bootstrap(lambda index: values[index].mean(1), 100).tolist()

    def quantile(q: float) -> float:
        cdf = 0.0
        for k in range(101):
            cdf += math.comb(100, k) * 0.75 ** k * 0.25 ** (100 - k)
            if cdf >= q:
                return k / 100

    assert low == pytest.approx(quantile(0.025), abs=0.011) and high == pytest.approx(quantile(0.975), abs=0.011)
    assert stats.bootstrap(lambda index: values[index].mean(1), 100).tolist() == [low, high]  # seeded


@pytest.mark.parametrize("only_a, only_b", [(0, 0), (3, 9), (12, 25), (40, 41), (150, 120), (0, 7)])
def test_mcnemar_equals_an_exact_binomial_tail(only_a, only_b):
    n, k = only_a + only_b, min(only_a, only_b)
    exact = min(Fraction(1), 2 * sum(Fraction(math.comb(n, i), 2 ** n) for i in range(k + 1))) if n else Fraction(1)
    assert stats.mcnemar(only_a, only_b) == pytest.approx(float(exact), rel=1e-9)


def test_expected_calibration_error_of_a_hand_worked_case():
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    targets = torch.tensor([0, 1, 0, 1])  # the 0.9 bin: half right (gap 0.4); the 0.6 bin: all right (gap 0.4)
    result = stats.expected_calibration_error(probs, targets)
    assert result["ece"] == pytest.approx(0.4)
    assert sum(result["count"]) == 4 and result["count"][13] == 2 and result["count"][9] == 2


def test_temperature_scaling_recovers_a_known_overconfidence_and_keeps_every_prediction():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 5, generator=gen) * 2
    targets = torch.multinomial(logits.softmax(1), 1, generator=gen)[:, 0]
    overconfident = (3 * logits).softmax(1)
    temperature = stats.fit_temperature(overconfident, targets)
    assert temperature == pytest.approx(3.0, rel=0.08)
    fixed = calibrated(overconfident, temperature)
    assert torch.equal(fixed.argmax(1), overconfident.argmax(1))
    assert stats.expected_calibration_error(fixed, targets)["ece"] < \
        stats.expected_calibration_error(overconfident, targets)["ece"] / 2


# ---------------------------------------------------------------- the test split, end to end
@pytest.fixture(scope="module")
def three_way(tmp_path_factory) -> Path:
    """train/val/test from split_data.py --test, and a model trained on it."""
    work = tmp_path_factory.mktemp("three_way")
    raw = make_colour_folder(work / "raw", n_train=12, n_val=0) / "train"
    split_data.split(raw, work / "data", val_ratio=0.25, test_ratio=0.25, quiet=True)
    (work / "data" / "test" / "red" / "broken.jpg").write_bytes(b"not a picture")  # train.py must never see it
    run_train(train_args(work / "data", work / "run", "--epochs", "4"))
    return work


def test_split_has_a_disjoint_seeded_test_split_and_the_same_val_as_without_it(tmp_path):
    raw = make_colour_folder(tmp_path / "raw", n_train=12, n_val=0) / "train"
    three = split_data.split(raw, tmp_path / "three", val_ratio=0.25, test_ratio=0.25, quiet=True)
    two = split_data.split(raw, tmp_path / "two", val_ratio=0.25, quiet=True)
    assert three == {"train": 18, "val": 9, "test": 9} and two == {"train": 27, "val": 9}

    def files(root: Path, part: str) -> set:
        return {p.relative_to(root / part) for p in (root / part).rglob("*.jpg")}

    assert files(tmp_path / "three", "val") == files(tmp_path / "two", "val")
    assert files(tmp_path / "three", "train") | files(tmp_path / "three", "test") == files(tmp_path / "two", "train")
    assert not files(tmp_path / "three", "train") & files(tmp_path / "three", "test")
    split_data.split(raw, tmp_path / "again", val_ratio=0.25, test_ratio=0.25, quiet=True)
    assert files(tmp_path / "again", "test") == files(tmp_path / "three", "test")


def test_test_fractions_that_leave_a_class_without_training_images_are_one_line(tmp_path, capsys):
    raw = make_colour_folder(tmp_path / "raw", n_train=3, n_val=0) / "train"
    assert split_data.main([str(raw), "--dest", str(tmp_path / "out"), "--val-ratio", "0.1", "--test", "0.85"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 images; --val-ratio 0.1 and --test 0.85 leave none for train/" in err
    assert split_data.main([str(raw), "--dest", str(tmp_path / "out"), "--test", "0.95"]) == 2
    assert "--test 0.95: must be 0 (no test split) or in (0, 0.9)" in capsys.readouterr().err
    shutil.rmtree(raw / "red")
    (raw / "red").mkdir()
    for i in range(2):
        shutil.copy(raw / "blue" / "blue_0.jpg", raw / "red" / f"r{i}.jpg")
    assert split_data.main([str(raw), "--dest", str(tmp_path / "out"), "--test", "0.2"]) == 2
    assert "has 2 image(s); each class needs at least 3" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_evaluate_scores_the_test_split_with_intervals(three_way, capsys):
    report = three_way / "report"
    # 1: the unreadable test image (which train.py never read: it trained without a word)
    assert evaluate.cli(["--weights", str(three_way / "run" / "best.pth"), "--output-dir", str(report),
                         "--neighbours", "0", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"(test split {three_way / 'data' / 'test'})" in out and "95% CI" in out and "ECE" in out
    assert "note: val/" not in out
    summary = json.loads((report / "summary.json").read_text())
    assert summary["split"] == "test" and summary["images"] == 9 and summary["unreadable"] == 1
    for key in ("top1", "top3", "macro_f1"):
        low, high = summary["ci"][key]
        assert 0 <= low <= summary[key] <= high <= 1, key
    rows = list(csv.DictReader(open(report / "per_class.csv", encoding="utf-8-sig")))
    assert all(float(r["recall_ci_low"]) <= float(r["recall"]) <= float(r["recall_ci_high"]) for r in rows[:3])
    with Image.open(report / "reliability.png") as img:
        assert img.width >= 300


def test_evaluate_on_the_split_that_chose_the_model_says_so(trained, capsys, tmp_path):
    out, _ = trained
    assert evaluate.cli(["--weights", str(out / "best.pth"), "--output-dir", str(tmp_path / "r"), "--neighbours", "0",
                         "--mistakes", "0", "--quiet"]) == 0
    assert "note: val/ is the split that chose this checkpoint" in capsys.readouterr().out
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["split"] == "val"


# ---------------------------------------------------------------- two models
@pytest.mark.slow
def test_compare_a_model_with_itself_and_with_its_onnx_export(three_way, capsys):
    weights = three_way / "run" / "best.pth"
    onnx_file = three_way / "compare.onnx"
    assert export.cli([str(weights), "-o", str(onnx_file), "--data", str(three_way / "data" / "val")]) == 0
    for other in (weights, onnx_file):
        report = three_way / f"compare-{other.suffix[1:]}"
        evaluate.cli(["--weights", str(weights), "--compare", str(other), "--output-dir", str(report),
                      "--neighbours", "0", "--mistakes", "0", "--quiet"])
        assert "no difference detectable on 9 images: B - A = +0.0 points" in capsys.readouterr().out
        result = json.loads((report / "summary.json").read_text())["compare"]
        assert (result["only_a"], result["only_b"], result["p_value"]) == (0, 0, 1.0)


def test_compare_states_a_detectable_difference_as_one_sentence():
    targets = torch.zeros(300, dtype=torch.long)
    a = torch.tensor([[0.2, 0.8]]).repeat(300, 1)  # always wrong
    b = a.clone()
    b[:60] = torch.tensor([0.9, 0.1])  # right on 60 images
    result = evaluate.compare_models("a.pth", a, "b.onnx", b, targets)
    assert result["verdict"].startswith("B is better by 20.0 points, 95% CI ")
    assert result["p_value"] == pytest.approx(2 * 0.5 ** 60) and (result["only_a"], result["only_b"]) == (0, 60)


@pytest.mark.slow
def test_compare_refuses_other_classes_or_another_eval_size_and_writes_nothing(three_way, tmp_path, capsys):
    weights = three_way / "run" / "best.pth"
    ckpt = load_checkpoint(str(weights))
    for name, changes, message in (("classes", {"classes": ["a", "b", "c"]}, "its classes (a, b, c) differ"),
                                   ("size", {"eval": {"size": 80, "resize": 91}}, "it evaluates 80 px crops")):
        other = tmp_path / f"{name}.pth"
        torch.save(ckpt | changes, other)
        assert evaluate.cli(["--weights", str(weights), "--compare", str(other), "--output-dir",
                             str(tmp_path / "r"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    squashed = tmp_path / "squashed.pth"  # another resize rule at the same size: each model sees its own views
    torch.save(ckpt | {"eval": {"size": 64, "resize": 0}}, squashed)
    assert evaluate.cli(["--weights", str(weights), "--compare", str(squashed), "--output-dir", str(tmp_path / "ok"),
                         "--neighbours", "0", "--mistakes", "0", "--quiet"]) == 1  # 1: the unreadable test image
    assert "images only B got right" in capsys.readouterr().out
    unknown = tmp_path / "unknown"
    shutil.copytree(three_way / "data", unknown, ignore=shutil.ignore_patterns("broken.jpg"))
    (unknown / "test" / "red").rename(unknown / "test" / "purple")
    assert evaluate.cli(["--weights", str(weights), "--data", str(unknown), "--output-dir", str(tmp_path / "r"),
                         "--quiet"]) == 2
    assert "the model does not know class 'purple'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- calibration
@pytest.mark.slow
def test_calibrate_stores_a_temperature_every_path_applies_and_no_prediction_changes(three_way, tmp_path, capsys):
    weights = tmp_path / "best.pth"
    shutil.copy(three_way / "run" / "best.pth", weights)
    photos = sorted(str(p) for p in (three_way / "data" / "val").rglob("*.jpg"))
    before = [p for _, p, _ in predict.predict_files(predict.load_classifier(str(weights)), photos, 8)]
    assert evaluate.cli(["--weights", str(weights), "--calibrate", "--data", str(three_way / "data" / "val"),
                         "--output-dir", str(tmp_path / "r"), "--neighbours", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    temperature = torch.load(weights, weights_only=True)["temperature"]
    assert temperature != 1.0 and f"temperature {temperature:.3f}, fitted on" in out and "uncalibrated: ECE" in out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["temperature"] == temperature and summary["ece_uncalibrated"] is not None
    classifier = predict.load_classifier(str(weights))
    after = [p for _, p, _ in predict.predict_files(classifier, photos, 8)]
    argmax = [max(range(3), key=p.__getitem__) for p in before]
    assert [max(range(3), key=p.__getitem__) for p in after] == argmax and after != before
    assert export.cli([str(weights), "-o", str(tmp_path / "m.onnx")]) == 0
    onnx = [p for _, p, _ in predict.predict_files(predict.load_classifier(str(tmp_path / "m.onnx")), photos, 8)]
    import app

    page = app.Page(classifier, max_upload_mb=20)
    web = [[page.classify(Image.open(p).convert("RGB"), p)[0][n] for n in classifier.names] for p in photos]
    for ours, theirs, shown in zip(after, onnx, web):
        assert ours == pytest.approx(theirs, abs=1e-4) and ours == pytest.approx(shown, abs=1e-4)
    torch.save(torch.load(weights, weights_only=True) | {"temperature": 0.0}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="field 'temperature' is 0.0"):
        load_checkpoint(str(tmp_path / "bad.pth"))


# ---------------------------------------------------------------- seeds
@pytest.mark.slow
def test_seeds_trains_each_seed_resumes_an_unfinished_one_and_reports(three_way, tmp_path, capsys):
    out = tmp_path / "seeds"
    train_args = ["--", "--data", str(three_way / "data"), "--img-size", "64", "--epochs", "2", "--batch-size", "8",
                  "--workers", "0", "--precision", "fp32"]
    assert seeds.cli(["--out", str(out), "--seeds", "0", *train_args]) == 0
    first = capsys.readouterr().out
    assert "seed 0: python train.py --data" in first and f"--seed 0 --output-dir {out / 'seed-0'}" in first
    shutil.copytree(out / "seed-0", out / "seed-1", ignore=shutil.ignore_patterns("eval"))
    last = out / "seed-1" / "last.pth"
    ckpt = torch.load(last, weights_only=True)  # as if seed 1 stopped after its first epoch
    torch.save(ckpt | {"epoch": 1, "metrics": ckpt["metrics"][:1]}, last)
    assert seeds.cli(["--out", str(out), "--seeds", "0", "1", *train_args]) == 0
    printed = capsys.readouterr().out
    assert "seed 0: " in printed and "is finished" in printed and f"--resume {last}" in printed
    report = json.loads((out / "seeds.json").read_text())
    assert [r["seed"] for r in report["runs"]] == [0, 1] and all(r["epochs"] == 2 for r in report["runs"])
    assert all(r["split"] == "test" and r["images"] == 9 for r in report["runs"])
    assert {"commit", "date", "cpu", "command"} <= set(report)
    assert "mean ± std" in (out / "seeds.md").read_text()


def mann_whitney_auroc(known: torch.Tensor, unknown: torch.Tensor) -> float:
    """The AUROC as stats.auroc computed it before it became scikit-learn's: the Mann-Whitney count."""
    scores = torch.cat([known, unknown]).double()
    _, inverse, counts = scores.unique(sorted=True, return_inverse=True, return_counts=True)
    ranks = ((counts.cumsum(0) - counts).double() + (counts.double() + 1) / 2)[inverse]
    return float((ranks[:len(known)].sum() - len(known) * (len(known) + 1) / 2) / (len(known) * len(unknown)))


def test_auroc_is_the_mann_whitney_count_with_ties_and_the_threshold_rejects_the_target_share():
    gen = torch.Generator().manual_seed(0)
    known = torch.randint(0, 12, (57,), generator=gen).float() / 12  # many ties
    unknown = torch.randint(0, 9, (43,), generator=gen).float() / 12
    assert stats.auroc(known, unknown) == pytest.approx(mann_whitney_auroc(known, unknown), abs=1e-12)
    assert stats.auroc(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2])) == 1.0
    scores = torch.rand(1000, generator=gen)
    for share in (0.01, 0.05, 0.2):
        threshold = stats.rejection_threshold(scores, share)
        assert (scores < threshold).double().mean() == pytest.approx(share, abs=1e-3)
        assert (scores <= threshold).double().mean() > share  # the largest such threshold

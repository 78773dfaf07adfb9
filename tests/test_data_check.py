"""Your own photos: data_set/check.py on planted duplicates, leaks, conflicts, imbalance and
unreadable files; the split tool keeping copies together; --balance; the label-issue finder."""
import csv
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet import settings
from alexnet import class_balance, trainer
import check
import label_issues
import split_data
from conftest import ROOT, make_colour_folder, run_train, train_args


def resized_copy(src: Path, dest: Path, scale: float = 0.8) -> None:
    """The same photo, smaller and recompressed: what a near-duplicate looks like."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as img:
        img.resize((int(img.width * scale), int(img.height * scale)), Image.BICUBIC).save(dest, quality=80)


def photo(path: Path, seed: int, size=(96, 80)) -> Path:
    """A smooth picture (gradients and a disc): unlike noise, its look survives resizing."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size[1], size[0]
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    a, b, c, r = torch.rand(4, generator=gen).tolist()
    disc = (((xx - a) ** 2 + (yy - b) ** 2) < (0.1 + 0.2 * r) ** 2).float()
    rgb = torch.stack([xx * c + disc * 0.5, yy * (1 - c) + disc * 0.3, (xx + yy) / 2 * r]).clamp(0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rgb * 255).byte().permute(1, 2, 0).numpy()).save(path, quality=92)
    return path


def numpy_phash(img: Image.Image) -> int:
    """The pHash as lookalike.phash computed it before it became imagehash's: scipy.fftpack's
    unnormalised type-II DCT written as a matrix."""
    side, bits = 32, 8
    dct = 2 * np.cos(np.pi * np.arange(bits)[:, None] * (2 * np.arange(side)[None, :] + 1) / (2 * side))
    grey = np.asarray(img.convert("L").resize((side, side), Image.LANCZOS), dtype=np.float64)
    low = dct @ grey @ dct.T
    return int("".join("1" if b else "0" for b in (low > np.median(low)).flatten()), 2)


def test_phash_equals_imagehash_and_the_hand_written_one(tmp_path):
    import imagehash

    pictures = [photo(tmp_path / f"p{i}.jpg", i) for i in range(6)]
    pictures += sorted((make_colour_folder(tmp_path / "c", n_train=2, n_val=0) / "train").rglob("*.jpg"))
    for path in pictures:
        with Image.open(path) as img:
            ours = check.phash(img.convert("RGB"))
            assert f"{ours:016x}" == str(imagehash.phash(img.convert("RGB"))), path
            assert ours == numpy_phash(img.convert("RGB")), path
    assert check.phash(Image.new("RGB", (50, 40), (90, 20, 200))) is None  # flat: no look to compare


def test_near_pairs_finds_every_pair_a_brute_force_finds():
    gen = torch.Generator().manual_seed(0)
    base = torch.randint(0, 2**62, (40,), generator=gen).tolist()
    hashes = base + [h ^ (1 << int(torch.randint(64, (1,), generator=gen))) for h in base[:10]]  # 1-bit variants
    brute = sorted((i, j, bin(hashes[i] ^ hashes[j]).count("1")) for i in range(len(hashes))
                   for j in range(i + 1, len(hashes)) if bin(hashes[i] ^ hashes[j]).count("1") <= 4)
    assert check.near_pairs(hashes, 4) == brute and len(brute) >= 10


@pytest.fixture
def planted(tmp_path) -> Path:
    """train/val/test with: a copy across splits, a resized copy across splits, a copy in two
    classes, a 10:1 class and an unreadable file."""
    root = tmp_path / "data"
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        for k, c in enumerate(("blue", "green", "red")):
            for i in range(n * (10 if c == "red" and split == "train" else 1)):
                photo(root / split / c / f"{c}_{i}.jpg", 1000 * k + 100 * len(split) + i)
    shutil.copy(root / "train" / "red" / "red_0.jpg", root / "val" / "red" / "copy_of_train_red_0.jpg")
    resized_copy(root / "train" / "green" / "green_1.jpg", root / "test" / "green" / "smaller_green_1.jpg")
    shutil.copy(root / "train" / "blue" / "blue_0.jpg", root / "train" / "red" / "blue_0_filed_as_red.jpg")
    (root / "train" / "blue" / "broken.jpg").write_bytes(b"not a picture")
    return root


@pytest.mark.slow
def test_check_reports_each_planted_problem_and_strict_fails(planted, tmp_path, capsys):
    out = tmp_path / "report"
    assert check.cli([str(planted), "--output-dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["pairs"]["leakage"] == 2 and report["pairs"]["conflicting labels"] == 1
    leaks = [g for g in report["copies"] if "leakage" in g["where"]]
    assert {g["kind"] for g in leaks} == {"exact", "near"}
    assert any("smaller_green_1.jpg" in i["path"] for g in leaks for i in g["images"])
    assert report["imbalance"]["train"] >= 10 and report["counts"]["train"]["red"] == 21
    assert [u["path"].endswith("broken.jpg") for u in report["unreadable"]] == [True]
    assert report["formats"] == {"JPEG": report["images"] - 1}
    for name in ("report.md", "class_counts.png", "duplicates.png"):
        assert (out / name).stat().st_size > 100, name
    assert check.cli([str(planted), "--output-dir", str(out), "--strict"]) == 1
    assert json.loads((out / "report.json").read_text())["decoded"] == 0  # the second check: all from the cache
    clean = tmp_path / "clean"
    shutil.copytree(planted, clean)
    for name in ("val/red/copy_of_train_red_0.jpg", "test/green/smaller_green_1.jpg", "train/red/blue_0_filed_as_red.jpg"):
        (clean / name).unlink()
    assert check.cli([str(clean), "--output-dir", str(tmp_path / "r2"), "--strict"]) == 0


def test_check_bad_input_is_one_line(tmp_path, capsys):
    root = make_colour_folder(tmp_path / "d", n_train=2, n_val=1)
    (root / "train" / "empty").mkdir()
    (root / "val" / "empty").mkdir()
    for folder, message in ((tmp_path / "nowhere", "data folder not found"), (root / "train", "no train/ folder"),
                            (root, "train/empty: class folder has no images")):
        assert check.cli([str(folder), "--output-dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    shutil.rmtree(root / "train" / "empty")
    for c in ("green", "red"):
        shutil.rmtree(root / "train" / c)
    assert check.cli([str(root), "--output-dir", str(tmp_path / "out")]) == 2
    assert "only one class folder (blue)" in capsys.readouterr().err


def test_split_keeps_near_duplicates_on_one_side(tmp_path):
    raw = tmp_path / "raw"
    for i in range(20):
        photo(raw / "a" / f"a{i}.jpg", i)
        photo(raw / "b" / f"b{i}.jpg", 100 + i)
    for i in range(0, 20, 4):
        resized_copy(raw / "a" / f"a{i}.jpg", raw / "a" / f"a{i}_small.jpg")
    for seed in range(6):
        dest = tmp_path / f"s{seed}"
        split_data.split(raw, dest, val_ratio=0.2, seed=seed, test_ratio=0.2, quiet=True)
        side = {p.name: p.parts[-3] for p in dest.rglob("*.jpg")}
        assert all(side[f"a{i}.jpg"] == side[f"a{i}_small.jpg"] for i in range(0, 20, 4)), seed


def test_balanced_sampler_draws_classes_alike_and_the_weighted_loss_is_as_by_hand():
    targets = [0] * 90 + [1] * 10
    counts = [90, 10]
    weights = [1 / counts[t] for t in targets]
    sampler = class_balance.BalancedSampler(range(100), weights, torch.Generator().manual_seed(0))
    drawn = [targets[i] for _ in range(50) for i in sampler]
    assert len(drawn) == 5000 and abs(sum(drawn) / len(drawn) - 0.5) < 0.03
    weights = trainer.class_weights("loss", counts, torch.device("cpu"))
    assert weights.tolist() == pytest.approx([100 / (2 * 90), 100 / (2 * 10)])
    logits, y = torch.randn(6, 2, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 1, 0, 0, 1])
    log_p = logits.log_softmax(1)[range(6), y]
    by_hand = -(weights[y] * log_p).sum() / weights[y].sum()
    assert torch.nn.CrossEntropyLoss(weight=weights)(logits, y).item() == pytest.approx(by_hand.item())
    assert trainer.class_weights("none", counts, torch.device("cpu")) is None
    assert class_balance.balance_mode("auto", counts) == class_balance.AUTO_BALANCE
    assert class_balance.balance_mode("auto", [12, 10]) == "none"
    assert settings.Config().balance == "auto" and settings.RECIPES["tutorial"]["balance"] == "none"


@pytest.mark.slow
def test_train_says_the_class_counts_the_imbalance_and_copies_across_the_split(planted, tmp_path, capsys):
    (planted / "train" / "blue" / "broken.jpg").unlink()
    summary = run_train(train_args(planted, tmp_path / "run", "--epochs", "1", "--balance", "sampler"))
    out = capsys.readouterr().out
    assert "training images per class: blue 2, green 2, red 21" in out
    assert "warning: class imbalance 10.5:1 (red 21, blue 2 images); weighing the classes alike (--balance sampler)" \
        in out
    assert "warning: 1 validation image(s) are byte-for-byte copies of training images" in out
    assert len(summary["history"]) == 1
    assert torch.load(tmp_path / "run" / "last.pth", weights_only=True)["config"]["balance"] == "sampler"


@pytest.mark.slow
def test_label_issue_finder_flags_planted_flips(tmp_path, capsys):
    pytest.importorskip("cleanlab")
    root = make_colour_folder(tmp_path / "d", n_train=12, n_val=2)
    planted = []
    for i, (c, wrong) in enumerate((("red", "green"), ("green", "blue"), ("blue", "red"))):
        src = root / "train" / c / f"{c}_{i}.jpg"
        dest = root / "train" / wrong / f"flipped_{c}_{i}.jpg"
        src.rename(dest)
        planted.append(str(dest))
    out = tmp_path / "issues"
    assert label_issues.cli([str(root), "--folds", "3", "--epochs", "4", "--output-dir", str(out),
                              "--train-args", "--img-size 64 --batch-size 8 --workers 0 --precision fp32"]) == 0
    with open(out / "label_issues.csv", newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    top = [r["file"] for r in rows[:6]]
    assert sum(p in top for p in planted) >= 2, rows[:6]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores) and len(rows) == 36
    half = 5e-7  # each column is rounded to 6 decimals
    for r in rows:  # the score: the geometric mean of the out-of-fold and in-sample probabilities of the label
        q, p = float(r["out_of_fold"]), float(r["in_sample"])
        assert 0 <= q <= 1 and 0 <= p <= 1
        low, high = math.sqrt(max(q - half, 0) * max(p - half, 0)), math.sqrt((q + half) * (p + half))
        assert low - half <= float(r["score"]) <= high + half, r
    assert (out / "suspects.png").stat().st_size > 1000
    sys.path.insert(0, str(ROOT / "tools"))
    import planted_flips

    (root / "flips.json").write_text(json.dumps(planted))
    capsys.readouterr()
    assert planted_flips.main(planted_flips.get_args_parser().parse_args(
        ["score", str(root), "--issues", str(out / "label_issues.csv"), "--weights", str(out / "folds/0/last.pth")])) == 0
    report = capsys.readouterr().out
    assert "3 planted flips among 36 training images" in report
    for name in ("finder (both)", "out-of-fold (cleanlab)", "in-sample loss"):
        assert f"{name}: average precision" in report
    assert label_issues.cli([str(root), "--folds", "20", "--output-dir", str(out)]) == 2
    assert "--folds 20: must be in 2..12" in capsys.readouterr().err


def test_planted_flips_summary_is_the_hand_computed_one():
    """tools/planted_flips.py's summary of a ranking (scikit-learn underneath): flips at places
    1, 3 and 6 give an average precision of (1/1 + 2/3 + 3/6) / 3, and recall 1.0 is reached at
    precision 0.5 (top 6)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import planted_flips

    ranked = ["f1", "a", "f2", "b", "c", "f3", "d", "e"]
    summary = planted_flips.ranking_summary(ranked, {"f1", "f2", "f3"})
    assert summary == f"average precision {(1 + 2 / 3 + 3 / 6) / 3:.3f}; largest recall at precision >= 0.5: 1.000 (top 6)"
    assert planted_flips.ranking_summary(ranked, {"f1", "f2", "f3"}, floor=0.7).endswith(": 0.333 (top 1)")

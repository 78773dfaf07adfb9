"""export.py and the ONNX path of predict.py: round trips for every arch, metadata,
agreement with the PyTorch path, no torch import, bad model files; the numpy evaluation
transform against the torch one."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet import decoding, transforms
import export
from alexnet import images
import predict
from conftest import ROOT
from model import AlexNet


def checkpoint(arch: str, path, size: int = 64, resize: int = 73) -> str:
    """A train.py-style checkpoint of random weights (predict.py needs nothing more)."""
    torch.manual_seed(0)
    net = AlexNet(num_classes=3, arch=arch, init_weights=True)
    torch.save({"model": net.state_dict(), "arch": arch, "num_classes": 3, "classes": ["cat", "dog", "emu"],
                "eval": {"size": size, "resize": resize}, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3],
                "best_acc": 0.5, "epoch": 3, "config": {"data": "somewhere"}}, path)
    return str(path)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out, _ = trained
    onnx_path = tmp_path_factory.mktemp("onnx") / "best.onnx"
    assert export.cli([str(out / "best.pth"), "-o", str(onnx_path)]) == 0
    return out / "best.pth", onnx_path


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["tutorial", "torchvision", "paper"])
def test_round_trip_for_each_arch_at_batch_1_and_7(arch, tmp_path, capsys):
    pth = checkpoint(arch, tmp_path / f"{arch}.pth")
    assert export.cli([pth, "-o", str(tmp_path / f"{arch}.onnx")]) == 0
    assert "top-1 agreement 100%" in capsys.readouterr().out
    torch_side = predict.load_classifier(pth)
    onnx_side = predict.load_classifier(str(tmp_path / f"{arch}.onnx"))
    gen = torch.Generator().manual_seed(1)
    for n in (1, 7):
        views = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=gen) for _ in range(n)]
        theirs = np.asarray(torch_side.probabilities(views))
        ours = np.asarray(onnx_side.probabilities([v.numpy() for v in views]))
        assert ours.shape == (n, 3) and np.abs(ours - theirs).max() < 1e-5
    assert onnx_side.names == ["cat", "dog", "emu"]
    assert (list(onnx_side.mean), list(onnx_side.std)) == ([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
    assert onnx_side.transform == images.EvalViews(64, 73, False)
    assert (onnx_side.card["arch"], onnx_side.card["best_acc"], onnx_side.card["epoch"]) == (arch, 0.5, 3)


@pytest.mark.slow
def test_predict_gives_the_same_answers_through_onnx(exported, colour_data, tmp_path, capsys):
    pth, onnx_path = exported
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    results = {}
    for weights in (pth, onnx_path):
        code = predict.cli([str(colour_data / "val"), str(tmp_path / "broken.jpg"), "--weights", str(weights),
                            "--no-show", "--tta"])
        out, err = capsys.readouterr()
        results[weights.suffix] = code, out, err
    assert results[".pth"][0] == results[".onnx"][0] == 1  # the same exit code for a bad image
    assert "broken.jpg: not a readable image" in results[".onnx"][2]
    heads = {s: [ln for ln in r[1].splitlines() if not ln.startswith(" ")] for s, r in results.items()}
    assert len(heads[".pth"]) == 12 and [h.rsplit(" ", 1)[0] for h in heads[".pth"]] == \
        [h.rsplit(" ", 1)[0] for h in heads[".onnx"]]  # the same top-1 for every image
    for a, b in zip(results[".pth"][1].split(), results[".onnx"][1].split()):
        if a.replace(".", "").isdigit():  # printed to 3 decimals: a value near a rounding edge may flip by one unit
            assert abs(float(a) - float(b)) <= 1e-3 + 1e-9
    files = [str(p) for p in sorted((colour_data / "val").rglob("*.jpg"))]
    probs = {w.suffix: [p for _, p, _ in predict.predict_files(predict.load_classifier(str(w), tta=True), files, 8)]
             for w in (pth, onnx_path)}
    assert np.abs(np.asarray(probs[".pth"]) - np.asarray(probs[".onnx"])).max() < 1e-5  # unrounded: both fp32


@pytest.mark.slow
def test_the_onnx_path_never_imports_torch(exported, colour_data):
    _, onnx_path = exported
    code = ("import sys, predict; rc = predict.cli(sys.argv[1:]); "
            "print('loaded:', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))); "
            "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(colour_data / "val" / "red" / "red_0.jpg"), "--weights",
                        str(onnx_path), "--no-show"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "loaded: []" and r.stdout.startswith(str(colour_data))


def test_metadata_is_the_checkpoints(exported):
    import onnx

    pth, onnx_path = exported
    ckpt = torch.load(pth, weights_only=True)
    meta = json.loads({p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}[export.METADATA_KEY])
    assert meta["classes"] == ckpt["classes"] and meta["eval"] == ckpt["eval"]
    assert (meta["mean"], meta["std"]) == (ckpt["mean"], ckpt["std"])
    assert (meta["arch"], meta["best_acc"], meta["epoch"]) == (ckpt["arch"], ckpt["best_acc"], ckpt["epoch"])


def test_bad_model_files_are_one_line_errors(exported, colour_data, tmp_path, capsys, monkeypatch):
    import onnx

    _, onnx_path = exported
    image = str(colour_data / "val" / "red" / "red_0.jpg")
    (tmp_path / "corrupt.onnx").write_bytes(onnx_path.read_bytes()[:5000])
    bare = onnx.load(str(onnx_path))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    cases = [(tmp_path / "corrupt.onnx", [], "not a readable ONNX model"),
             (tmp_path / "missing.onnx", [], "ONNX model not found"),
             (tmp_path / "bare.onnx", [], "class_indices.json: lists 5 classes, but")]
    monkeypatch.chdir(ROOT)  # the tutorial's class_indices.json: 5 flowers, but this model has 3 outputs
    for weights, extra, message in cases:
        assert predict.cli([image, "--weights", str(weights), "--no-show", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    (tmp_path / "ci.json").write_text('{"0": "b", "1": "g", "2": "r"}')
    assert predict.cli([image, "--weights", str(tmp_path / "bare.onnx"), "--class-indices", str(tmp_path / "ci.json"),
                        "--no-show"]) == 0  # without our metadata: the tutorial's defaults and the names given
    assert export.cli([str(tmp_path / "nope.pth")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.parametrize("size, resize, tta", [(64, 73, False), (64, 0, False), (64, 73, True), (64, 0, True),
                                               (96, 110, False)])
def test_the_numpy_evaluation_transform_matches_the_torch_one(size, resize, tta, tmp_path):
    """predict.py's ONNX path preprocesses with Pillow and numpy: the same views as
    transforms.EvalTransform up to the rounding of the two resamplers (1 in 255)."""
    gen = torch.Generator().manual_seed(size + resize)
    for h, w in ((90, 130), (300, 71), (64, 64), (50, 400)):
        pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=gen)
        Image.fromarray(pixels.numpy()).save(tmp_path / "x.png")
        theirs = transforms.EvalTransform(size, resize, tta)(decoding.decode_pillow(str(tmp_path / "x.png")))
        ours = images.EvalViews(size, resize, tta)(images.open_rgb(str(tmp_path / "x.png")))
        theirs = theirs.reshape(-1, 3, size, size).numpy().astype(int)
        assert ours.shape == theirs.shape
        assert np.abs(ours.astype(int) - theirs).max() <= 1, (h, w)

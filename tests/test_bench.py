"""bench.py runs end to end and reports every figure (no timing is asserted)."""
import json
import re
import sys

import bench

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_bench_reports_both_paths_as_json(capsys):
    assert bench.main(["--train-per-class", "3", "--val-per-class", "1", "--repeats", "1", "--steps", "1",
                       "--batch-size", "4", "--predict-runs", "1", "--json"]) == 0
    out = capsys.readouterr().out
    res = json.loads(out[out.index("{"):])
    assert res["batch_building_images_per_s"]["per_image"] > 0 and res["batch_building_images_per_s"]["batched"] > 0
    for path in ("tutorial", "default", "default_device_batches_on"):
        assert len(res[path]["train"]) == 1 and res[path]["train"][0] > 0 and res[path]["val"][0] > 0
    assert res["train_gflop_per_image"] > 1.0  # forward + backward of the half-width net at 224 px
    assert res["matmul_gflops"]["fp32"] > 0
    assert {name: len(walls) for name, walls in res["predict_wall_s"].items()} == {"torch": 1, "onnx": 1, "tutorial": 1}
    assert res["inference_images_per_s"]["pytorch"] > 0 and res["inference_images_per_s"]["onnxruntime"] > 0


def test_report_on_a_machine_without_bf16_says_so(capsys):
    """An AVX2-only CPU emulates bf16 at under 1 GFLOP/s: no absurd percentages."""
    res = {"device": "cpu", "batch_size": 32, "repeats": 1, "data": "D",
           "tutorial": {"train": [80.0], "val": [120.0], "workers": 2},
           "default": {"train": [110.0], "val": [400.0], "startup_s": 3.0, "precision": "fp32"},
           "default_device_batches_on": {"train": [105.0], "val": [390.0], "startup_s": 3.0, "precision": "fp32"},
           "batch_building_images_per_s": {"per_image": 900.0, "batched": 700.0},
           "model_step": {"fp32_nchw": 95.0, "fp32_channels_last_fused": 120.0},
           "matmul_gflops": {"fp32": 300.0, "bf16": None}, "train_gflop_per_image": 1.75,
           "peak_rss_mib": {"after_tutorial": 1000.0, "after_default": 2000.0}}
    bench.report(res)
    out = capsys.readouterr().out
    assert "bf16 not supported by this hardware" in out
    assert "GFLOP/s, bf16 0" not in out and all(len(tok) < 6 for tok in out.split() if tok.endswith("%"))


@pytest.mark.slow
def test_batch_overlap_tool_reports_every_variant(colour_data, capsys):
    """tools/batch_overlap.py (the measurements behind keeping batch building in the main
    thread) runs end to end; no timing is asserted."""
    sys.path.insert(0, str(ROOT / "tools"))
    import batch_overlap

    assert batch_overlap.main(["--data", str(colour_data), "--batch-size", "4", "--batches", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("making batches: torchvision, per image", "making batches: TrainAugment, per batch",
                 "steps, batches built between them", "steps, batches built by a thread", "steps on one fixed batch"):
        assert float(re.search(re.escape(name) + r"\s+([\d.]+) images/s", out).group(1)) > 0, out
    assert batch_overlap.main(["--data", str(colour_data), "--rounds", "0"]) == 2
    assert "error: --rounds 0: must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_step_layers_tool_accounts_for_every_layer(capsys):
    """tools/step_layers.py (behind docs/performance.md's per-layer table) times the five
    convolutions and three linear layers and sets them beside the whole step; their FLOPs add
    up to what bench counts for the whole model. No timing is asserted."""
    sys.path.insert(0, str(ROOT / "tools"))
    import step_layers

    assert step_layers.main(["--batch-size", "2", "--steps", "1", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^(features\.\d+|classifier\.\d+)\s+\S+\s+([\d.]+)\s", out, re.M)
    assert [name for name, _ in rows] == ["features.0", "features.3", "features.6", "features.8", "features.10",
                                          "classifier.1", "classifier.4", "classifier.6"]
    layers_gflop = float(re.search(r"the layers' ([\d.]+) GFLOP", out).group(1))
    assert abs(layers_gflop - 2 * bench.train_flops_per_image() / 1e9) < 0.02
    assert re.search(r"train.py's step: [\d.]+ ms \([\d.]+ images/s, \d+% of the limit\)", out), out
    assert step_layers.main(["--batch-size", "0"]) == 2
    assert "error: --batch-size 0: must be at least 1" in capsys.readouterr().err

"""bench.py runs end to end and reports every figure (no timing is asserted)."""
import json

from conftest import run_script


def test_bench_reports_both_paths_as_json():
    r = run_script("bench.py", "--train-per-class", "3", "--val-per-class", "1", "--repeats", "1", "--steps", "1",
                   "--batch-size", "4", "--json", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout[r.stdout.index("{"):])
    for path in ("tutorial", "default"):
        assert len(res[path]["train"]) == 1 and res[path]["train"][0] > 0 and res[path]["val"][0] > 0
    assert res["train_gflop_per_image"] > 1.0  # forward + backward of the half-width net at 224 px
    assert res["matmul_gflops"]["fp32"] > 0 and len(res["predict_wall_s"]["ours"]) == 3

"""torchrun with two processes over gloo on the CPU: the code path several GPUs take."""
import json
import os
import shutil
import subprocess
import sys

import torch

from conftest import ROOT, make_colour_folder


def test_torchrun_two_processes_share_the_work_and_draw_their_own_augmentation(colour_data, tmp_path):
    same = make_colour_folder(tmp_path / "same", n_train=4, n_val=1)
    photo = same / "train" / "red" / "red_0.jpg"
    for img in (same / "train").rglob("*.jpg"):
        if img != photo:
            shutil.copy(photo, img)
    out, result = tmp_path / "ddp", tmp_path / "result"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "tests" / "torchrun_checks.py"), str(colour_data), str(same), str(out),
                           str(result)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 30 images, 15 per rank, batch 16: one short batch per rank and epoch, not zero steps
    assert proc.stdout.count("done: best val top-1") == 1  # logging on rank 0 only
    assert "30 train / 12 val images" in proc.stdout and "batch 16 x 2" in proc.stdout
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 2 and not any(k.startswith("module.") for k in ckpt["model"])
    assert [row["train_images_per_s"] > 0 for row in ckpt["metrics"]] == [True, True]
    reports = [json.loads((tmp_path / f"result-{rank}.json").read_text()) for rank in (0, 1)]
    assert [(r["code"], r["initialized_after_run"]) for r in reports] == [(0, False)] * 2  # the group was destroyed
    first, dropout, weights = ([r[key] for r in reports] for key in ("first_batch", "dropout_mask", "initial_weights"))
    assert first[0] != first[1] and dropout[0] != dropout[1]  # each rank its own crops, flips and masks
    assert weights[0] == weights[1]  # but the same starting weights

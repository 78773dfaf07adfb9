"""torchrun with two processes over gloo on the CPU: the code path several GPUs take."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import torch

import pytest

from conftest import ROOT, make_colour_folder


def same_image_data(tmp_path):
    """Every training image the same photo: the batches differ only by each rank's augmentation."""
    same = make_colour_folder(tmp_path / "same", n_train=4, n_val=1)
    photo = same / "train" / "red" / "red_0.jpg"
    for img in (same / "train").rglob("*.jpg"):
        if img != photo:
            shutil.copy(photo, img)
    return same


def check_two_ranks(stdout: str, out, tmp_path) -> None:
    """What tests/torchrun_checks.py's two ranks must have seen and written, however launched."""
    # 30 images, 15 per rank, batch 16: one short batch per rank and epoch, not zero steps
    assert stdout.count("done: best val top-1") == 1  # logging on rank 0 only
    assert "30 train / 12 val images" in stdout and "batch 16 x 2" in stdout
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 2 and not any(k.startswith("module.") for k in ckpt["model"])
    assert stdout.count("suggested --lr") == 1 and ckpt["config"]["lr_mode"] == "auto"  # --lr auto: one range test
    assert [row["train_images_per_s"] > 0 for row in ckpt["metrics"]] == [True, True]
    reports = [json.loads((tmp_path / f"result-{rank}.json").read_text()) for rank in (0, 1)]
    assert [(r["code"], r["initialized_after_run"]) for r in reports] == [(0, False)] * 2  # the group was destroyed
    first, dropout, weights = ([r[key] for r in reports] for key in ("first_batch", "dropout_mask", "initial_weights"))
    assert first[0] != first[1] and dropout[0] != dropout[1]  # each rank its own crops, flips and masks
    assert weights[0] == weights[1]  # but the same starting weights


def torchrun(*launcher: str, script_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher, str(ROOT / "tests" / "torchrun_checks.py"),
            *script_args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_meet_at_a_c10d_rendezvous_share_the_work_and_draw_their_own_augmentation(colour_data, tmp_path):
    """Two torchrun launchers of one process each, as two machines would start them (README,
    "On a cluster"), meeting at a c10d rendezvous on 127.0.0.1: the two ranks split the images,
    draw their own crops and masks from the same starting weights, and --lr auto runs one range
    test (check_two_ranks). torchrun --standalone, one machine's launcher, starts the run below."""
    out = tmp_path / "ddp"
    args = [str(colour_data), str(same_image_data(tmp_path)), str(out), str(tmp_path / "result")]
    launcher = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
                "--rdzv-id=two-nodes-test"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(torchrun(*launcher, script_args=args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, env=env) for _ in range(2)]
    results = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    check_two_ranks("".join(stdout for stdout, _ in results), out, tmp_path)


@pytest.mark.slow
def test_a_two_process_run_stopped_mid_epoch_resumes_to_the_same_weights(colour_data, tmp_path):
    """SIGTERM to torchrun (what a cluster sends before it kills a job) in the middle of an
    epoch: both ranks stop at the same step, rank 0 writes that step's place; the same command
    with --resume auto then ends with the weights of a run never stopped."""
    def command(out):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                str(ROOT / "train.py"), "--data", str(colour_data), "--output-dir", str(out), "--img-size", "64",
                "--epochs", "3", "--batch-size", "2", "--lr", "1e-3", "--quiet", "--workers", "0",
                "--precision", "fp32", "--device", "cpu", "--resume", "auto"]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = subprocess.run(command(tmp_path / "full"), capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert full.returncode == 0, full.stderr[-3000:]
    out = tmp_path / "job"
    job = subprocess.Popen(command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    while not (out / "last.pth").exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.01)
    job.send_signal(signal.SIGTERM)  # 8 steps an epoch: it lands inside one
    _, stderr = job.communicate(timeout=120)
    assert "stopped: interrupted at epoch" in stderr and "steps of epoch" in stderr, stderr[-3000:]
    position = torch.load(out / "last.pth", weights_only=True)["position"]
    assert position["steps"] >= 1 and len(position["rng"]) == 2  # each rank's random state
    resumed = subprocess.run(command(out), capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (torch.load(run / "last.pth", weights_only=True) for run in (tmp_path / "full", out))
    assert [r["train_loss"] for r in a["metrics"]] == [r["train_loss"] for r in b["metrics"]]
    for k, v in a["model"].items():
        assert torch.equal(b["model"][k], v), k

"""Faults: signals, kills mid-write, a diverging loss, a second run, bad images, odd paths."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

import predict
import train
from conftest import ROOT, make_colour_folder, run_train, train_args


def start_train(data, out, *extra) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *train_args(data, out, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"train.py ended early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(poll)


def loads_completely(path) -> bool:
    ckpt = torch.load(path, weights_only=True)
    return {"model", "optimizer", "epoch"} <= set(ckpt)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])  # USR1: SLURM's preemption notice
def test_interrupt_keeps_last_epoch_and_says_how_to_resume(sig, colour_data, tmp_path):
    out = tmp_path / "out"
    proc = start_train(colour_data, out, "--epochs", "50")
    wait_for(lambda: (out / "last.pth").exists(), proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "resume with  python train.py --resume" in stderr and "Traceback" not in stderr
    last = torch.load(out / "last.pth", weights_only=True)
    assert 1 <= last["epoch"] < 50 and len(last["metrics"]) == last["epoch"]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"  # drawn as the run stopped
    assert not list(out.glob("*.tmp-*"))


@pytest.mark.slow
def test_second_interrupt_quits_at_once_without_damage(colour_data, tmp_path):
    out = tmp_path / "out"
    proc = start_train(colour_data, out, "--epochs", "50")
    wait_for(lambda: (out / "last.pth").exists(), proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert loads_completely(out / "last.pth") and loads_completely(out / "best.pth")


@pytest.mark.slow
def test_sigkill_while_writing_then_resume_matches_an_uninterrupted_run(colour_data, tmp_path):
    run_train(train_args(colour_data, tmp_path / "full", "--epochs", "4"))
    out = tmp_path / "killed"
    proc = start_train(colour_data, out, "--epochs", "4")
    # kill while a checkpoint is being written, after at least one complete epoch
    wait_for(lambda: (out / "last.pth").exists() and list(out.glob("*.tmp-*")), proc, poll=0.001)
    proc.kill()
    proc.communicate()
    for name in ("best.pth", "last.pth"):
        assert loads_completely(out / name), name  # the previous complete file, never a partial one
    done = torch.load(out / "last.pth", weights_only=True)["epoch"]
    assert done < 4
    summary = run_train(["--resume", str(out / "last.pth"), "--quiet", "--workers", "0"])
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3, 4]
    assert (out / "metrics.csv").read_text().count("\n") == 5
    full = torch.load(tmp_path / "full" / "last.pth", weights_only=True)
    resumed = torch.load(out / "last.pth", weights_only=True)
    for k, v in full["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, rtol=0, atol=1e-6)
    assert resumed["best_acc"] == full["best_acc"]
    assert not list(out.glob("*.tmp-*"))


@pytest.mark.slow
def test_a_requeued_job_reruns_the_same_command_with_resume_auto(colour_data, tmp_path):
    """--resume auto: a fresh start when the folder has no last.pth; after SIGUSR1 (the
    preemption notice) the same command continues, and ends where an uninterrupted run does."""
    run_train(train_args(colour_data, tmp_path / "full", "--epochs", "3", "--batch-size", "2"))
    out = tmp_path / "job"
    proc = start_train(colour_data, out, "--epochs", "3", "--batch-size", "2", "--resume", "auto")
    wait_for(lambda: (out / "last.pth").exists(), proc)
    proc.send_signal(signal.SIGUSR1)  # 15 steps an epoch: it lands inside the second or third
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "SIGUSR1: stopping" in stderr, stderr
    stopped = torch.load(out / "last.pth", weights_only=True)
    assert stopped["epoch"] < 3 and stopped["position"]["steps"] >= 1  # the step it stopped at, mid-epoch
    summary = run_train(train_args(colour_data, out, "--epochs", "3", "--batch-size", "2", "--resume", "auto"))
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    full = torch.load(tmp_path / "full" / "last.pth", weights_only=True)
    resumed = torch.load(out / "last.pth", weights_only=True)
    for k, v in full["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, rtol=0, atol=1e-6)
    code = train.cli(train_args(colour_data, out, "--epochs", "6", "--lr", "5e-4", "--resume", "auto"))
    assert code == 2  # the existing resume rules: another --lr is refused, by name


@pytest.mark.slow
def test_loader_workers_do_not_change_the_batches(colour_data, tmp_path):
    """Each crop is drawn from a seed of its place in the epoch (datasets.SeededSampler), so two
    worker processes give the weights of none."""
    runs = {n: run_train(train_args(colour_data, tmp_path / f"w{n}", "--epochs", "2", "--workers", str(n)))
            for n in (0, 2)}
    assert [r["train_loss"] for r in runs[0]["history"]] == [r["train_loss"] for r in runs[2]["history"]]
    a, b = (torch.load(tmp_path / f"w{n}" / "last.pth", weights_only=True)["model"] for n in (0, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_epoch(colour_data, tmp_path, monkeypatch, capsys):
    """Weights turned NaN in epoch 2 (as a diverging run's would): the next loss
    is NaN, the run stops with the advice a diverged run needs, and both files keep epoch 1."""
    out, steps = tmp_path / "out", []
    real_step = train.train_step

    def poisoned_step(cfg, machine, trainer, images, targets):
        taken = real_step(cfg, machine, trainer, images, targets)
        steps.append(1)
        if len(steps) == 4:  # epoch 2's first step (epoch 1 takes 3: 30 images in full batches of 8)
            trainer.model.classifier[-1].weight.data.fill_(float("nan"))
        return taken

    monkeypatch.setattr(train, "train_step", poisoned_step)
    code = train.cli(train_args(colour_data, out, "--epochs", "3"))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert "loss is nan at epoch 2 step 2: training diverged at --lr 0.001" in err
    assert "keep epoch 1 and 1, from before" in err and "the same command with --lr 0.0001 --overwrite" in err
    last = torch.load(out / "last.pth", weights_only=True)
    assert last["epoch"] == 1 and torch.load(out / "best.pth", weights_only=True)["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values())


@pytest.mark.slow
def test_a_second_run_in_the_same_folder_is_refused(colour_data, tmp_path, capsys):
    out = tmp_path / "out"
    first = start_train(colour_data, out, "--epochs", "50")
    wait_for(lambda: (out / "class_indices.json").exists(), first)
    second = train.cli(train_args(colour_data, out))
    first.kill()
    first.communicate()
    assert second == 2
    assert "another train.py is writing to this folder" in capsys.readouterr().err


def test_a_fresh_run_never_replaces_a_trained_model(trained, colour_data):
    out, _ = trained
    before = (out / "best.pth").read_bytes()
    with pytest.raises(Exception, match="already holds a trained model"):
        run_train(train_args(colour_data, out))
    assert (out / "best.pth").read_bytes() == before


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """Every kind of odd file a photo folder collects; four of them are unreadable."""
    root = make_colour_folder(tmp_path_factory.mktemp("messy"), n_train=6, n_val=2)
    red, blue = root / "train" / "red", root / "train" / "blue"
    (red / "empty.jpg").write_bytes(b"")
    good = (red / "red_1.jpg").read_bytes()
    (red / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (blue / "notes.jpg").write_text("this is text")
    Image.new("1", (9500, 9500)).save(blue / "bomb.png")  # over Pillow's 89.5 Mpx limit
    Image.new("RGB", (70, 70), (220, 40, 40)).convert("CMYK").save(red / "cmyk.jpg")
    Image.new("I;16", (70, 70), 30000).save(blue / "deep16.png")
    Image.new("RGBA", (70, 70), (30, 60, 220, 128)).save(blue / "alpha.png")
    Image.new("RGB", (1, 1), (220, 40, 40)).save(red / "tiny.png")
    (red / "readme.md").write_text("not an image extension")
    (red / ".DS_Store").write_bytes(b"\0\1")
    return root


def test_bad_images_are_all_reported_before_training(messy, tmp_path, capsys):
    out = tmp_path / "out"
    code = train.cli(train_args(messy, out))
    stdout, stderr = capsys.readouterr()
    assert code == 2
    assert "4 unreadable image(s)" in stderr and "--bad-images skip" in stderr
    for name in ("empty.jpg", "truncated.jpg", "notes.jpg", "bomb.png"):
        assert name in stderr
    assert "decompression-bomb" in stderr
    for fine in ("cmyk.jpg", "deep16.png", "alpha.png", "tiny.png", "readme.md", ".DS_Store"):
        assert fine not in stderr
    assert "skipped 1 file: 1 .md" in stdout  # what is not an image is counted, hidden files are not
    assert "epoch" not in stdout and not (out / "last.pth").exists()


@pytest.mark.slow
def test_skip_trains_on_the_readable_ones(messy, tmp_path):
    summary = run_train(train_args(messy, tmp_path / "out", "--bad-images", "skip", "--epochs", "1"))
    assert summary["history"][0]["epoch"] == 1
    ckpt = torch.load(tmp_path / "out" / "last.pth", weights_only=True)
    assert ckpt["classes"] == ["blue", "green", "red"]


@pytest.mark.slow
def test_paths_with_spaces_and_chinese(tmp_path, capsys):
    root = make_colour_folder(tmp_path / "我的 数据", n_train=4, n_val=2)
    (root / "train" / "red").rename(root / "train" / "红色 red")
    (root / "val" / "red").rename(root / "val" / "红色 red")
    out = tmp_path / "输出 out"
    run_train(train_args(root, out, "--epochs", "1"))
    assert torch.load(out / "best.pth", weights_only=True)["classes"][2] == "红色 red"
    img = next((root / "val" / "红色 red").iterdir())
    capsys.readouterr()
    assert predict.cli([str(img), "--weights", str(out / "best.pth"), "--no-show"]) == 0
    assert "红色 red" in capsys.readouterr().out


def test_resume_on_data_with_other_classes_is_refused(trained, tmp_path, capsys):
    out, _ = trained
    other = make_colour_folder(tmp_path / "other", n_train=2, n_val=1)
    (other / "train" / "red").rename(other / "train" / "pink")
    (other / "val" / "red").rename(other / "val" / "pink")
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "last.pth").write_bytes((out / "last.pth").read_bytes())
    assert train.cli(["--resume", str(copy / "last.pth"), "--data", str(other), "--quiet", "--epochs", "9"]) == 2
    assert "trained on classes" in capsys.readouterr().err


def test_one_truncated_image_is_one_line_naming_it(tmp_path, capsys):
    root = make_colour_folder(tmp_path / "d", n_train=3, n_val=1)
    victim = root / "val" / "green" / "green_0.jpg"
    victim.write_bytes(victim.read_bytes()[:300])
    assert train.cli(train_args(root, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {victim}: ")
    assert "--bad-images skip" in err


def test_a_damaged_mid_epoch_position_is_one_line(trained, tmp_path, capsys):
    out, _ = trained
    ckpt = torch.load(out / "last.pth", weights_only=True)
    bad = tmp_path / "last.pth"
    torch.save(ckpt | {"position": {"epoch": ckpt["epoch"], "steps": 3, "sums": {"seen": 6}, "rng": []}}, bad)
    assert train.cli(["--resume", str(bad), "--epochs", str(ckpt["epoch"] + 1)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "field 'position'" in err and "cannot be resumed" in err

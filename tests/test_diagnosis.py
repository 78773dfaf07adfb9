"""The diagnosis at the end of a run (alexnet/diagnosis.py): each planted failure named,
a healthy run left alone; and the advice it gives, --weights imagenet among it."""
import json
import re
import shutil

import pytest
import torch
from PIL import Image

from alexnet import checkpoint, diagnosis, lr_finder
from alexnet.images import IMAGENET_MEAN
from alexnet.preemption import TrainingStopped
import train
from conftest import make_colour_folder, one_error_line, run_train, train_args, use_hub_cache

COMMAND = lambda **changes: "python train.py " + " ".join(f"--{k} {v}" for k, v in changes.items())  # noqa: E731


def findings(out) -> list[dict]:
    return json.loads((out / "diagnosis.json").read_text())["findings"]


def test_a_healthy_run_gets_no_finding(trained):
    out, _ = trained
    written = json.loads((out / "diagnosis.json").read_text())
    assert written["findings"] == []
    assert written["evidence"]["counts"] == [10, 10, 10] and written["evidence"]["copies"] == 0


@pytest.mark.slow
def test_a_learning_rate_too_low_is_named_with_a_working_command(colour_data, tmp_path, capsys):
    out = tmp_path / "run"
    run_train(train_args(colour_data, out, "--lr", "1e-6", "--epochs", "4", "--batch-size", "2"))  # 60 steps
    said = capsys.readouterr().out
    assert [f["cause"] for f in findings(out)][0] == "lr_too_low"
    advice = next(line for line in said.splitlines() if line.startswith("  next: ") and "--lr 1e-05" in line)
    assert f"--data {colour_data}" in advice and f"--output-dir {out}" in advice and "--overwrite" in advice


def test_a_loss_that_explodes_stops_the_run_with_its_diagnosis(colour_data, tmp_path, capsys):
    with pytest.raises(TrainingStopped, match="diverged"):
        run_train(train_args(colour_data, tmp_path / "run", "--lr", "10", "--recipe", "tutorial"))
    said = capsys.readouterr().out
    assert "diagnosis (diverged): the loss exploded" in said and "--lr 1 " in said
    assert [f["cause"] for f in findings(tmp_path / "run")] == ["diverged"]  # the folder keeps it


@pytest.mark.slow
def test_validation_copied_from_training_is_named(colour_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(colour_data / "train", data / "train")
    for path in (data / "train").rglob("*.jpg"):  # val: every training photo, resized and recompressed
        copy = data / "val" / path.parent.name / f"copy_{path.name}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as img:
            img.resize((img.width * 3 // 4, img.height * 3 // 4)).save(copy, quality=80)
    out = tmp_path / "run"
    run_train(train_args(data, out, "--epochs", "1"))
    found = findings(out)
    copied = int(re.search(r"(\d+) of 30 validation photos are copies", found[0]["text"]).group(1))
    assert found[0]["cause"] == "mirror" and copied >= 10  # noise photos: some hashes move more than the limit
    assert found[0]["command"] == f"python data_set/check.py {data}"


@pytest.mark.slow
def test_too_few_photos_point_at_imagenet_weights(tmp_path):
    data = make_colour_folder(tmp_path / "few", n_train=3, n_val=3)
    for path in data.rglob("*.jpg"):  # noise: nothing to learn from three photos a class
        Image.fromarray(torch.randint(0, 256, (64, 64, 3), dtype=torch.uint8).numpy()).save(path)
    out = tmp_path / "run"
    run_train(train_args(data, out, "--epochs", "2"))
    few = next(f for f in findings(out) if f["cause"] == "few_images")
    assert "3 in the smallest class" in few["text"]
    assert "--weights imagenet --arch torchvision" in few["command"] and "--lr" not in few["command"]


@pytest.mark.slow
def test_labels_that_do_not_match_the_images_point_at_the_label_finder(tmp_path):
    """Shuffled labels: 24 smooth random pictures whose labels say nothing about them, which
    AlexNet memorises (training top-1 rises) while validation stays at chance."""
    gen = torch.Generator().manual_seed(0)
    data = tmp_path / "shuffled"
    for split, n in (("train", 24), ("val", 48)):
        for i in range(n):
            low = torch.rand(1, 3, 6, 6, generator=gen)  # a 6 x 6 colour pattern, smoothly enlarged
            picture = torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear")[0]
            folder = data / split / f"c{int(torch.randint(3, (1,), generator=gen))}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((picture * 255).to(torch.uint8).permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    out = tmp_path / "run"
    run_train(train_args(data, out, "--epochs", "20", "--recipe", "tutorial", "--dropout", "0",
                         "--crop-scale", "1", "1"))
    labels = findings(out)[0]
    assert labels["cause"] == "labels" and labels["command"] == f"python data_set/label_issues.py {data}"


@pytest.mark.slow
def test_a_long_run_that_memorises_wrong_labels_is_named_overfitting_with_the_epoch_it_began(tmp_path):
    """Overfitting: pictures whose colour tells the class, 40% of the training labels wrong;
    the model learns the colour first, then memorises the wrong labels, and the validation
    loss rises from its lowest while the training loss falls."""
    gen = torch.Generator().manual_seed(0)
    data = tmp_path / "noisy"
    for split, n in (("train", 20), ("val", 16)):
        for i in range(3 * n):
            label = i % 3
            if split == "train" and float(torch.rand(1, generator=gen)) < 0.4:
                label = (i % 3 + 1 + int(torch.randint(2, (1,), generator=gen))) % 3
            low = torch.rand(1, 3, 6, 6, generator=gen)
            picture = 0.7 * torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear")[0]
            picture[i % 3] += 0.3  # the class's colour
            folder = data / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((picture * 255).to(torch.uint8).permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    out = tmp_path / "run"
    run_train(train_args(data, out, "--epochs", "30", "--recipe", "tutorial", "--sched", "cosine", "--dropout", "0",
                         "--crop-scale", "1", "1"))
    over = next(f for f in findings(out) if f["cause"] == "overfitting")
    low = min(torch.load(out / "last.pth", weights_only=True)["metrics"], key=lambda r: r["val_loss"])
    assert f"overfitting from epoch {low['epoch'] + 1}:" in over["text"] and "best.pth holds epoch" in over["text"]
    assert "--aug trivialaugment" in over["command"]


def rows(*values) -> list[dict]:
    """metrics.csv rows from (train_loss, train_acc, val_loss, val_top1, step_loss_max) tuples."""
    return [dict(epoch=i + 1, train_loss=tl, train_acc=ta, val_loss=vl, val_top1=vt, step_loss_max=peak)
            for i, (tl, ta, vl, vt, peak) in enumerate(values)]


def evidence(history, **changes) -> diagnosis.Evidence:
    return diagnosis.Evidence(**dict(history=history, num_classes=5, counts=[500] * 5, val_counts=[60] * 5, copies=0,
                                     data="photos", lr=1e-3, recipe="fast", aug="none", fine_tuned=False) | changes)


def test_memorising_with_validation_at_chance_points_at_the_labels():
    found = diagnosis.diagnose(evidence(rows((1.61, 0.2, 1.61, 0.2, 1.8), (1.3, 0.45, 1.7, 0.21, 1.6),
                                             (0.7, 0.8, 2.0, 0.19, 1.1))), COMMAND)
    assert [f.cause for f in found] == ["labels"]
    assert found[0].command == "python data_set/label_issues.py photos"


def test_a_loss_that_jumps_without_learning_is_a_learning_rate_too_high():
    found = diagnosis.diagnose(evidence(rows((3.0, 0.2, 1.61, 0.2, 9.0), (1.62, 0.2, 1.61, 0.2, 1.7))), COMMAND)
    assert [f.cause for f in found] == ["lr_too_high"] and "--lr 0.0001" in found[0].command


def test_a_loss_that_sits_at_a_blind_guess_crept_at_a_rate_too_low_or_after_a_jump_names_rate_and_labels():
    crept = rows((1.611, 0.2, 1.61, 0.2, 1.62), (1.609, 0.2, 1.61, 0.2, 1.62), (1.601, 0.2, 1.61, 0.2, 1.63))
    assert [f.cause for f in diagnosis.diagnose(evidence(crept, lr=1e-6), COMMAND)] == ["lr_too_low"]
    # a step loss 1.24x a blind guess's, then back at it: a collapse, or labels without signal
    collapsed = rows((1.628, 0.2, 1.61, 0.2, 2.0), (1.611, 0.2, 1.61, 0.2, 1.63), (1.612, 0.2, 1.61, 0.2, 1.68))
    found = diagnosis.diagnose(evidence(collapsed, lr=3e-3), COMMAND)
    assert [f.cause for f in found] == ["lr_or_labels"] and found[0].command.startswith("python train.py --lr find")
    assert "the learning rate 0.003 is too high" in found[0].text and "the labels carry no signal" in found[0].text


def test_no_verdict_on_the_learning_rate_of_a_run_too_small_to_tell_or_after_the_range_test():
    """200 classes of 2 photos for 2 epochs: once "too low" at 1e-3 and "too high" at 1e-2."""
    crept = rows((5.30, 0.005, 5.30, 0.005, 5.35), (5.29, 0.01, 5.30, 0.005, 5.33))
    jumped = rows((5.9, 0.005, 5.30, 0.005, 14.0), (5.31, 0.005, 5.30, 0.005, 5.5))
    tiny = dict(num_classes=200, counts=[2] * 200, val_counts=[1] * 200, steps=26)
    for history, lr in ((crept, 1e-3), (jumped, 1e-2)):
        found = diagnosis.diagnose(evidence(history, lr=lr, **tiny), COMMAND)
        assert [f.cause for f in found] == ["too_small", "few_images"]
        assert "too small to tell why" in found[0].text and found[0].command == "python data_set/check.py photos"
    # 2 flower photos a class, 40 epochs: memorised, as any 10 photos are whatever their labels: not "labels"
    memorised = rows((1.61, 0.2, 1.61, 0.2, 1.7), (1.2, 0.6, 1.7, 0.21, 1.5), (0.5, 1.0, 2.0, 0.2, 0.9))
    assert [f.cause for f in diagnosis.diagnose(evidence(memorised, counts=[2] * 5, steps=40), COMMAND)] == \
        ["too_small", "few_images"]
    assert [f.cause for f in diagnosis.diagnose(evidence(memorised), COMMAND)] == ["labels"]  # 500 a class
    many_steps = dict(tiny, counts=[500] * 200, steps=49)  # enough photos, too few steps
    assert [f.cause for f in diagnosis.diagnose(evidence(crept, **many_steps), COMMAND)] == ["too_small"]
    assert [f.cause for f in diagnosis.diagnose(evidence(crept, **many_steps | {"steps": 50}), COMMAND)] == \
        ["lr_too_low"]
    # --lr auto: the range test chose the rate, its loss fell there; train longer, never "too low"
    found = diagnosis.diagnose(evidence(crept, lr=1.6e-4, lr_mode="auto", budget=16.0), COMMAND)
    assert [f.cause for f in found] == ["not_learning"] and "--lr find" not in found[0].command
    assert found[0].command == "python train.py --budget 64s --overwrite True"
    assert "the rate the range test chose (--lr auto, 0.00016)" in found[0].text


def test_overfitting_says_from_which_epoch_and_what_best_pth_holds():
    history = rows((1.5, 0.3, 1.4, 0.4, 1.8), (1.1, 0.6, 1.0, 0.62, 1.5), (0.8, 0.75, 0.9, 0.66, 1.2),
                   (0.4, 0.9, 1.05, 0.65, 0.9), (0.2, 0.97, 1.3, 0.64, 0.5))
    found = diagnosis.diagnose(evidence(history), COMMAND)
    assert [f.cause for f in found] == ["overfitting"]
    assert "from epoch 4" in found[0].text and "best.pth holds epoch 3" in found[0].text
    assert "the best before it rose" in found[0].text and "--aug trivialaugment" in found[0].command
    # the long recipe with augmentation already: fine-tuning is what is left to try
    later = diagnosis.diagnose(evidence(history, recipe="long", aug="trivialaugment"), COMMAND)[0]
    assert "--weights imagenet" in later.command
    # the same curves with validation loss flat at the end: nothing to say
    assert diagnosis.diagnose(evidence(history[:3]), COMMAND) == []


def test_a_fine_tuned_run_on_few_photos_is_not_told_to_fine_tune():
    history = rows((1.5, 0.3, 1.4, 0.45, 1.8), (1.2, 0.5, 1.2, 0.55, 1.5))
    assert [f.cause for f in diagnosis.diagnose(evidence(history, counts=[20] * 5), COMMAND)] == ["few_images"]
    assert diagnosis.diagnose(evidence(history, counts=[20] * 5, fine_tuned=True), COMMAND) == []


# ---------------------------------------------------------------- --weights imagenet
@pytest.mark.slow
def test_weights_imagenet_fine_tunes_torchvisions_file_from_the_hub_cache(colour_data, hub_cache, tmp_path,
                                                                          monkeypatch):
    use_hub_cache(hub_cache, monkeypatch)
    out = tmp_path / "run"
    checkpoint.sha256_of.cache_clear()
    run_train(train_args(colour_data, out, "--weights", "imagenet", "--epochs", "1"))
    hashed = checkpoint.sha256_of.cache_info()
    assert hashed.misses == 1 and hashed.hits >= 1  # read twice (settings, the model), hashed once
    ckpt = torch.load(out / "best.pth", weights_only=True)
    assert ckpt["arch"] == "torchvision" and ckpt["config"]["weights"] == "imagenet"
    assert tuple(ckpt["mean"]) == IMAGENET_MEAN


def test_weights_imagenet_checks_the_hash_of_a_file_placed_by_hand_and_names_a_usable_cache(
        colour_data, hub_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(hub_cache))  # the stand-in's SHA-256 is not 7be5be79...
    file = hub_cache / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    code = train.cli(train_args(colour_data, tmp_path / "run", "--weights", "imagenet"))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and line.startswith(f"error: {file}: its SHA-256 starts ") and "not 7be5be79" in line
    assert not (tmp_path / "run").exists()
    not_a_folder = tmp_path / "torch_home_file"
    not_a_folder.write_text("")
    monkeypatch.setenv("TORCH_HOME", str(not_a_folder))
    code = train.cli(train_args(colour_data, tmp_path / "run", "--weights", "imagenet"))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and f"torch's hub cache {not_a_folder / 'hub' / 'checkpoints'} cannot be a folder" in line
    assert "point TORCH_HOME at a folder you can write" in line


def test_weights_imagenet_offline_says_which_file_to_fetch_and_where(colour_data, tmp_path, monkeypatch, capsys):
    home = tmp_path / "empty_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for proxy in ("https_proxy", "HTTPS_PROXY"):  # nothing listens there: no network, at once
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    capsys.readouterr()
    code = train.cli(train_args(colour_data, tmp_path / "run", "--weights", "imagenet"))
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err
    assert last.startswith("error: --weights imagenet: cannot download https://download.pytorch.org/models/")
    assert last.endswith(f"put it at {home / 'hub' / 'checkpoints' / 'alexnet-owt-7be5be79.pth'}")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- --lr find / auto
@pytest.mark.slow
def test_lr_find_plots_suggests_and_leaves_no_model(colour_data, trained, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("best.pth", "last.pth"):  # an earlier model in the folder: neither refused nor touched
        shutil.copy(trained[0] / name, out / name)
    before = {name: (out / name).read_bytes() for name in ("best.pth", "last.pth")}
    result = run_train(train_args(colour_data, out, "--lr", "find"))
    said = capsys.readouterr().out
    suggested = result["lr_suggestion"]
    assert lr_finder.START_LR < suggested < lr_finder.END_LR
    assert f"suggested --lr {suggested:g}" in said
    advice = next(line for line in said.splitlines() if line.startswith("train with it: python train.py "))
    # the folder holds a model: training there needs --overwrite (tests/test_advice.py runs such a command)
    assert advice.endswith(f"--lr {suggested:.2g} --overwrite") and f"--data {colour_data}" in advice
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert written == ["best.pth", "last.pth", "lr_find.png"]
    assert before == {name: (out / name).read_bytes() for name in ("best.pth", "last.pth")}
    with Image.open(out / "lr_find.png") as img:
        assert img.width > 300


@pytest.mark.slow
def test_lr_auto_trains_with_the_suggestion_and_resume_keeps_it(colour_data, tmp_path, capsys):
    out = tmp_path / "run"
    run_train(train_args(colour_data, out, "--lr", "auto", "--epochs", "2"))
    said = capsys.readouterr().out
    found = float(re.search(r"suggested --lr (\S+)", said).group(1))
    config = torch.load(out / "last.pth", weights_only=True)["config"]
    assert config["lr"] == found and config["lr_mode"] == "auto"
    # a requeued job's command line: --lr auto --resume auto goes on with the rate found, never tests again
    run_train(train_args(colour_data, out, "--lr", "auto", "--epochs", "3", "--resume", "auto"))
    said = capsys.readouterr().out
    assert "suggested --lr" not in said and "epoch 3/3" in said
    assert torch.load(out / "last.pth", weights_only=True)["config"]["lr"] == found
    code = train.cli(train_args(colour_data, out, "--lr", "find", "--epochs", "4", "--resume", "auto"))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --lr find: ") and err.count("\n") == 1


def test_the_suggestion_is_a_tenth_of_the_lowest_point_or_of_the_end_of_a_plateau():
    lrs = [10 ** (-7 + i / 4) for i in range(33)]  # 1e-7 .. 10
    falls = [1.6] * 16 + [1.5, 1.3, 1.0, 0.8, 0.7, 0.75, 0.9, 1.4, 2.5, 7.0]  # lowest at step 20: 1e-2
    found = lr_finder.RangeTest(lrs[:len(falls)], falls)
    assert found.fell and found.lowest == lrs[20] and found.suggestion == 1e-3
    # a loss that sits at ln(classes) until it rises at 1e-2 (the demo shapes): a tenth of the plateau's end
    flat = [1.62, 1.605] + [1.61] * 18 + [1.8, 3.0, 7.0]
    found = lr_finder.RangeTest(lrs[:len(flat)], flat)
    assert not found.fell and found.flat_until == lrs[19] and found.suggestion == float(f"{lrs[19] / 10:.2g}")
    assert "did not fall before it rose at" in found.describe()

"""Hostile but realistic inputs, one test per class of problem: paths that are no regular
file, outputs that would replace inputs, every bit depth, a precision decided by the
hardware, non-finite weights, a full disk or a vanished image mid-run, crafted metadata.
Each one ends quickly in one line and leaves the user's files as they were, or works.
tools/try_inputs.py runs the same classes (and more) as separate processes."""
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import bench
from alexnet import decoding
from alexnet.errors import DataError
import evaluate
import export
from alexnet import folders
from alexnet import images
from alexnet import machine
from alexnet import outputs, splitting
from alexnet.classifier import expand
import predict
import train
from conftest import ROOT, make_colour_folder, one_error_line, run_train, train_args, write_png48

sys.path.insert(0, str(ROOT / "data_set"))
import split_data  # noqa: E402


def spawn(script: str, *args, **kwargs) -> subprocess.CompletedProcess:
    """A separate process where the process itself is under test: a hang must fail the test, not stall the suite."""
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={**os.environ, "MPLBACKEND": "Agg"}, **kwargs)


# ---------------------------------------------------------------- paths that are no regular file
@pytest.fixture
def specials(tmp_path):
    pipe = tmp_path / "pipe.pth"
    os.mkfifo(pipe)
    zero = tmp_path / "zero.pth"
    zero.symlink_to("/dev/zero")
    return {"pipe": pipe, "zero": zero}


@pytest.mark.parametrize("case", ["weights pipe", "weights /dev/zero", "image pipe", "class-indices pipe",
                                  "resume pipe"])
@pytest.mark.slow
def test_a_named_pipe_or_a_device_is_refused_before_it_is_read(case, specials, trained, tmp_path):
    out, _ = trained
    image = tmp_path / "pipe.jpg"
    os.mkfifo(image)
    good = str(out / "best.pth")
    argv = {"weights pipe": ["predict.py", image.with_name("x.jpg"), "--weights", specials["pipe"]],
            "weights /dev/zero": ["predict.py", "x.jpg", "--weights", specials["zero"]],
            "image pipe": ["predict.py", image, "--weights", good],
            "class-indices pipe": ["predict.py", "x.jpg", "--weights", good, "--class-indices", specials["pipe"]],
            "resume pipe": ["train.py", "--resume", specials["pipe"]]}[case]
    r = spawn(*argv, "--no-show" if argv[0] == "predict.py" else "--quiet")
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr
    assert "not a regular file" in r.stderr and ("named pipe" in r.stderr or "character device" in r.stderr)


def test_folder_scans_skip_pipes_and_say_so(tmp_path):
    root = make_colour_folder(tmp_path / "d", n_train=2, n_val=1)
    os.mkfifo(root / "train" / "red" / "stuck.jpg")
    listing = folders.list_images(str(root / "train" / "red"))
    assert len(listing.files) == 2 and folders.describe_skipped(listing) == "skipped 1 file: 1 (not a regular file)"
    files, _, skipped = expand([str(root / "train" / "red")])
    assert len(files) == 2 and "(not a regular file)" in skipped
    tutorial = bench.tutorial_loaders(root, 2)[0].dataset  # torchvision's ImageFolder: it would open the pipe
    assert len(tutorial) == 6


@pytest.mark.parametrize("kind", ["checkpoint", "class index"])
def test_a_file_over_the_size_limit_is_not_read(kind, trained, tmp_path, capsys):
    out, _ = trained
    huge = tmp_path / ("huge.pth" if kind == "checkpoint" else "huge.json")
    with open(huge, "wb") as f:
        f.truncate(5 * 2**30 if kind == "checkpoint" else 64 * 2**20)  # sparse: no disk space used
    raw = tmp_path / "raw.pth"
    torch.save(torch.load(out / "best.pth", weights_only=True)["model"], raw)
    argv = ["--weights", str(huge)] if kind == "checkpoint" else ["--weights", str(raw), "--class-indices", str(huge)]
    assert predict.cli(["x.jpg", *argv, "--no-show"]) == 2
    assert f"a {kind} can have here; not read" in one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------- outputs never replace inputs
@pytest.mark.slow
def test_no_output_replaces_an_input_or_a_file_of_another_kind(trained, colour_data, tmp_path, capsys):
    out, _ = trained
    run = tmp_path / "run"
    shutil.copytree(out, run, ignore=shutil.ignore_patterns(".cache", ".lock"))
    photo = tmp_path / "photo.png"
    Image.new("RGB", (80, 60), (10, 200, 30)).save(photo)
    other_photo = tmp_path / "holiday.png"
    shutil.copy(photo, other_photo)
    before = {p: p.read_bytes() for p in (run / "last.pth", run / "best.pth", photo, other_photo)}
    cases = [
        (export.cli, [str(run / "best.pth"), "-o", str(run / "last.pth")], "must end in .onnx"),
        (export.cli, [str(run / "best.pth"), "-o", str(photo.with_suffix(".onnx"))], None),
        (predict.cli, [str(photo), "--weights", str(run / "best.pth"), "--save", str(photo), "--no-show"],
         "names an input of this command"),
        (predict.cli, [str(photo), "--weights", str(run / "best.pth"), "--save", str(other_photo), "--no-show"],
         "already holds a PNG image"),
        (predict.cli, [str(photo), "--weights", str(run / "best.pth"), "--save", str(tmp_path / "fig.xyz"),
                       "--no-show"], ".xyz is not a figure format"),
        (predict.cli, [str(colour_data / "val"), "--weights", str(run / "best.pth"), "--save",
                       str(colour_data / "val" / "fig.png"), "--no-show"], "inside the input folder"),
    ]
    shutil.copy(photo, photo.with_suffix(".onnx"))  # a photo that happens to carry the ONNX name
    for cli, argv, why in cases:
        assert cli(argv) == 2, argv
        stdout, err = capsys.readouterr()
        assert (why or "already holds a PNG image") in one_error_line(err) and "wrote" not in stdout
    assert {p: p.read_bytes() for p in before} == before
    assert photo.with_suffix(".onnx").read_bytes() == photo.read_bytes()
    assert not (colour_data / "val" / "fig.png").exists() and not (tmp_path / "fig.xyz").exists()
    figure = tmp_path / "figure.png"  # an earlier figure may be replaced by a new one
    for _ in range(2):
        assert predict.cli([str(photo), "--weights", str(run / "best.pth"), "--save", str(figure), "--no-show"]) == 0
    assert outputs.written_by_matplotlib(figure)


@pytest.mark.slow
def test_overwrite_leaves_no_file_of_the_older_run(trained, tmp_path, capsys):
    out, _ = trained
    old = tmp_path / "old"
    shutil.copytree(out, old, ignore=shutil.ignore_patterns(".cache", ".lock"))
    (old / "eval").mkdir()
    (old / "eval" / "summary.json").write_text('{"top1": 0.99}')
    shutil.copy(old / "best.pth", old / "best.onnx")  # stands for an export of the old model
    (old / "notes.txt").write_text("mine")
    four = make_colour_folder(tmp_path / "four", n_train=3, n_val=1)
    for part in ("train", "val"):
        shutil.copytree(four / part / "red", four / part / "violet")
    assert train.cli(train_args(four, old, "--epochs", "1", "--overwrite")) == 0
    stdout = capsys.readouterr().out
    assert "--overwrite: removed the older run's" in stdout and "eval/summary.json" in stdout
    assert not (old / "eval").exists() and not (old / "best.onnx").exists() and (old / "notes.txt").exists()
    assert torch.load(old / "best.pth", weights_only=True)["classes"] == ["blue", "green", "red", "violet"]
    done = stdout.strip().splitlines()[-1]
    assert done.endswith(f"weights in {old / 'best.pth'} and {old / 'last.pth'}")


@pytest.mark.slow
def test_a_run_whose_top1_stays_zero_still_saves_its_best_and_names_only_real_files(colour_data, tmp_path, monkeypatch,
                                                                                    capsys):
    validate = train.validate
    monkeypatch.setattr(train, "validate", lambda *args, **kwargs: {**validate(*args, **kwargs), "val_top1": 0.0})
    out = tmp_path / "zero"
    summary = run_train(train_args(colour_data, out, "--epochs", "2"))
    assert summary["best_epoch"] == 1 and summary["best_acc"] == 0.0
    assert torch.load(out / "best.pth", weights_only=True)["epoch"] == 1
    done = capsys.readouterr().out.strip().splitlines()[-1]
    assert done == f"done: best val top-1 0.0000 at epoch 1; weights in {out / 'best.pth'} and {out / 'last.pth'}"


# ---------------------------------------------------------------- every bit depth, every path
PIXELS = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
GREY = PIXELS[..., 0]


@pytest.mark.parametrize("depth", ["48-bit RGB PNG", "16-bit grey PNG", "16-bit grey TIFF", "float TIFF 0..1",
                                   "float TIFF 0..255", "1-bit PNG", "32-bit int TIFF"])
def test_every_bit_depth_reaches_the_model_as_8_bit_rgb_on_every_path(depth, tmp_path):
    path = tmp_path / ("img.png" if "PNG" in depth else "img.tif")
    grey = np.repeat(GREY[..., None], 3, axis=2)
    if depth == "48-bit RGB PNG":
        write_png48(path, PIXELS.astype(np.uint16) * 256 + 100)  # the low byte must not matter
        expected = PIXELS
    elif depth.startswith("16-bit") or depth == "32-bit int TIFF":
        kind = np.int32 if depth.startswith("32") else np.uint16
        Image.fromarray(GREY.astype(kind) * 256 + 77).save(path)
        expected = grey
    elif depth == "float TIFF 0..1":
        Image.fromarray(GREY.astype(np.float32) / 255).save(path)
        expected = grey
    elif depth == "float TIFF 0..255":
        Image.fromarray(GREY.astype(np.float32)).save(path)
        expected = grey
    else:
        Image.fromarray(GREY > 127).save(path)
        expected = np.repeat(np.where(GREY > 127, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
    want = torch.from_numpy(expected).permute(2, 0, 1)
    assert torch.equal(decoding.decode_rgb(str(path)), want)  # train.py and evaluate.py
    assert torch.equal(decoding.decode_pillow(str(path)), want)  # predict.py
    assert np.array_equal(np.asarray(images.open_rgb(str(path))), expected)  # the ONNX path (no torch)
    with Image.open(path) as opened:  # app.py's uploads
        assert torch.equal(decoding.rgb_from_pil(opened, "upload"), want)


# ---------------------------------------------------------------- precision
@pytest.mark.parametrize("caps, vendor, expected", [
    ({"amx_bf16": True, "avx512_bf16": True}, "GenuineIntel", "bf16"),
    ({"avx512_bf16": True}, "GenuineIntel", "fp32"),  # AVX512-BF16 without AMX ran bf16 at half the fp32 rate
    ({"avx512_bf16": True}, "AuthenticAMD", "bf16"),
    ({"avx2": True}, "AuthenticAMD", "fp32"),
    ({}, "", "fp32"),
])
def test_precision_is_decided_by_what_the_cpu_reports(caps, vendor, expected, monkeypatch):
    monkeypatch.setattr(machine, "cpu_capabilities", lambda: caps)
    monkeypatch.setattr(machine, "cpu_vendor", lambda: vendor)
    assert {machine.pick_precision("auto", torch.device("cpu")) for _ in range(5)} == {expected}
    assert machine.pick_precision("fp32", torch.device("cpu")) == "fp32"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_freed_memory_is_reused_without_page_faults():
    """machine.keep_freed_memory (train.py's setting): a 48 MiB block, freed and allocated again,
    comes back from the heap already mapped, where glibc by default unmaps it on free and
    page-faults it in again on first touch (the first FC layer's gradient each step)."""
    machine.keep_freed_memory()
    faults = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = torch.empty(12 * 2**20)  # 48 MiB of float32
        block.fill_(1.0)  # touches every page
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        del block
    pages = 48 * 2**20 // resource.getpagesize()
    assert max(faults[1:]) < pages // 20, faults  # glibc's default: about `pages` each time


def test_this_cpu_gets_one_precision_every_time():
    assert len({machine.pick_precision("auto", torch.device("cpu")) for _ in range(5)}) == 1


@pytest.mark.skipif(not machine.cpu_has_bf16(), reason="this CPU has no bf16 instructions")
def test_bf16_training_is_recorded_and_kept_on_resume(colour_data, tmp_path, capsys):
    out = tmp_path / "bf16"
    summary = run_train(train_args(colour_data, out, "--epochs", "1", "--precision", "bf16"))
    assert 0 <= summary["best_acc"] <= 1
    assert torch.load(out / "last.pth", weights_only=True)["precision"] == "bf16"
    capsys.readouterr()
    run_train(["--resume", str(out / "last.pth"), "--epochs", "2", "--quiet", "--workers", "0"])
    assert "cpu bf16" in capsys.readouterr().out
    resumed = torch.load(out / "last.pth", weights_only=True)
    assert resumed["precision"] == "bf16" and resumed["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in resumed["model"].values())
    run_train(["--resume", str(out / "last.pth"), "--epochs", "3", "--quiet", "--workers", "0", "--precision", "fp32"])
    assert torch.load(out / "last.pth", weights_only=True)["precision"] == "fp32"  # unless told otherwise


@pytest.mark.slow
def test_an_fp32_run_resumes_in_fp32_whatever_auto_would_pick(colour_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "fp32"
    run_train(train_args(colour_data, out, "--epochs", "1"))
    monkeypatch.setattr(machine, "pick_precision", lambda name, device: "bf16" if name == "auto" else name)
    capsys.readouterr()
    run_train(["--resume", str(out / "last.pth"), "--epochs", "2", "--quiet", "--workers", "0"])
    assert "cpu fp32" in capsys.readouterr().out
    assert torch.load(out / "last.pth", weights_only=True)["precision"] == "fp32"


# ---------------------------------------------------------------- non-finite weights
@pytest.fixture(scope="module")
def broken(trained, tmp_path_factory):
    out, _ = trained
    ckpt = torch.load(out / "best.pth", weights_only=True)
    ckpt["model"]["classifier.4.weight"][3, 5] = float("nan")
    path = tmp_path_factory.mktemp("broken") / "nan.pth"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("tool", ["predict", "evaluate", "export", "train --weights", "train --resume"])
def test_non_finite_weights_are_an_error_naming_the_tensor(tool, broken, colour_data, tmp_path, capsys):
    argv = {"predict": (predict.cli, [str(colour_data / "val" / "red" / "red_0.jpg"), "--weights", str(broken)]),
            "evaluate": (evaluate.cli, ["--weights", str(broken), "--data", str(colour_data / "val"),
                                        "--output-dir", str(tmp_path / "r")]),
            "export": (export.cli, [str(broken), "-o", str(tmp_path / "m.onnx")]),
            "train --weights": (train.cli, train_args(colour_data, tmp_path / "o", "--weights", str(broken))),
            "train --resume": (train.cli, ["--resume", str(broken)])}
    cli, args = argv[tool]
    assert cli(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{broken}: field 'model.classifier.4.weight' holds NaN or infinite values" in line
    assert not (tmp_path / "r").exists() and not (tmp_path / "m.onnx").exists() and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_an_onnx_model_with_nan_weights_never_answers(trained, tmp_path, capsys):
    import onnx
    from onnx import numpy_helper

    out, _ = trained
    good = tmp_path / "good.onnx"
    assert export.cli([str(out / "best.pth"), "-o", str(good)]) == 0
    proto = onnx.load(str(good))
    init = next(i for i in proto.graph.initializer if numpy_helper.to_array(i).ndim == 2)
    weights = numpy_helper.to_array(init).copy()
    weights[:] = np.nan
    init.CopyFrom(numpy_helper.from_array(weights, init.name))
    bad = tmp_path / "nan.onnx"
    onnx.save(proto, str(bad))
    capsys.readouterr()
    photo = tmp_path / "photo.png"
    Image.new("RGB", (80, 60), (10, 200, 30)).save(photo)
    assert predict.cli([str(photo), "--weights", str(bad), "--no-show"]) == 2
    stdout, err = capsys.readouterr()
    assert "NaN or infinite probabilities" in one_error_line(err) and "nan" not in stdout


# ---------------------------------------------------------------- a full disk, a vanished image
@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_stops_in_one_line_and_keeps_the_last(colour_data, tmp_path):
    out = tmp_path / "run"
    run_train(train_args(colour_data, out, "--epochs", "1"))
    before = (out / "last.pth").read_bytes()
    limit = 8 * 2**20  # the disk "fills" at 8 MiB a file: a checkpoint is ~170 MiB (Python ignores SIGXFSZ)
    r = spawn("train.py", "--resume", out / "last.pth", "--epochs", "2", "--quiet",
              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    # best.pth is written first when the epoch improved, then copied to last.pth
    assert any(line.startswith(f"stopped: {out / name}: cannot write (File too large") for name in ("best.pth",
                                                                                                    "last.pth"))
    assert line.endswith(f"last.pth holds epoch 1: resume with  python train.py --resume {out / 'last.pth'}")
    assert (out / "last.pth").read_bytes() == before and not list(out.glob("*.tmp-*"))


@pytest.mark.slow
def test_an_image_that_vanishes_mid_run_names_it_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    root = make_colour_folder(tmp_path / "d", n_train=8, n_val=1)  # 24 images: three whole batches, none dropped
    victim = root / "train" / "green" / "green_2.jpg"
    finish = train.finish_epoch

    def then_delete(*args, **kwargs):
        finish(*args, **kwargs)
        victim.unlink(missing_ok=True)

    monkeypatch.setattr(train, "finish_epoch", then_delete)
    out = tmp_path / "out"
    assert train.cli(train_args(root, out, "--epochs", "3", "--cache-mem", "0")) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"stopped: {victim}: image not found")
    assert err.endswith(f"last.pth holds epoch 1: resume with  python train.py --resume {out / 'last.pth'}")
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 1


# ---------------------------------------------------------------- checkpoint and ONNX metadata
@pytest.mark.parametrize("field, value, message", [
    ("eval", {"size": 10, "resize": 0}, "field 'eval.size' is 10; must be in 63..1024"),
    ("eval", {"size": "224"}, "field 'eval' must be"),
    ("arch", "resnet", "field 'arch' is 'resnet'; known: tutorial, torchvision, paper"),
    ("classes", ["a", "b"], "field 'classes' lists 2 names for 3 outputs"),
    ("classes", ["a", "a", "b"], "field 'classes' names a class twice"),
    ("num_classes", "3", "field 'num_classes' is '3'"),
    ("mean", [0.5, 0.5], "field 'mean' must be three finite numbers"),
    ("std", [0.0, 0.5, 0.5], "field 'std' must be three positive numbers"),
    ("best_acc", 5.0, "field 'best_acc' must be a number in [0, 1]"),
    ("model", {"features.0.weight": [1, 2]}, "field 'model' is not a state_dict"),
])
@pytest.mark.slow
def test_every_checkpoint_field_is_one_line_naming_file_and_field(field, value, message, trained, tmp_path, capsys):
    out, _ = trained
    ckpt = torch.load(out / "best.pth", weights_only=True)
    path = tmp_path / "crafted.pth"
    torch.save({**ckpt, field: value}, path)
    assert predict.cli(["x.jpg", "--weights", str(path), "--no-show"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {path}: {message}")


def test_resume_checks_its_own_fields(trained, tmp_path, capsys):
    out, _ = trained
    ckpt = torch.load(out / "last.pth", weights_only=True)
    for field, value, message in (("config", {**ckpt["config"], "epochs": "ten"}, "field 'config.epochs' is 'ten'"),
                                  ("optimizer", None, "field 'optimizer' is missing")):
        path = tmp_path / f"{field}.pth"
        torch.save({**ckpt, field: value}, path)
        assert train.cli(["--resume", str(path)]) == 2
        assert message in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("kind, message", [
    ("a JPEG", "not a PyTorch checkpoint at all: it is a JPEG image"),
    ("an ONNX model", "not a PyTorch checkpoint at all: it is an ONNX model"),
    ("empty", "not a PyTorch checkpoint at all: it is an empty file"),
    ("code", "refused for safety: it holds pickled objects that could run code"),
])
@pytest.mark.slow
def test_not_a_checkpoint_is_told_apart_from_refused_for_safety(kind, message, trained, colour_data, tmp_path, capsys):
    out, _ = trained
    path = tmp_path / "given.pth"
    if kind == "a JPEG":
        shutil.copy(colour_data / "val" / "red" / "red_0.jpg", path)
    elif kind == "an ONNX model":
        assert export.cli([str(out / "best.pth"), "-o", str(tmp_path / "m.onnx")]) == 0
        shutil.copy(tmp_path / "m.onnx", path)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94"
                         b"\x8c\x04true\x94\x85\x94R\x94.")  # os.system("true"), pickled
    capsys.readouterr()
    assert train.cli(["--resume", str(path)]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: {path}: {message}")


def onnx_with(path, tmp_path, metadata: str | None = None, foreign: bool = False):
    import onnx
    from onnx import helper

    if foreign:
        x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 10])
        y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 10])
        proto = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                                  opset_imports=[helper.make_opsetid("", 17)])
        proto.ir_version = 8
    else:
        proto = onnx.load(str(path))
        next(p for p in proto.metadata_props if p.key == "alexnet").value = metadata
    crafted = tmp_path / "crafted.onnx"
    onnx.save(proto, str(crafted))
    return crafted


@pytest.mark.parametrize("case, message", [
    ("classes 5", "(metadata): field 'classes' is not a list of names"),
    ("eval string", "(metadata): field 'eval' must be"),
    ("mean text", "(metadata): field 'mean' must be three finite numbers"),
    ("a list", "its 'alexnet' metadata is not a JSON object"),
    ("foreign", "not an image classifier export"),
    ("eval size 224", "(metadata): field 'eval.size' is 224, but the graph takes 64 x 64 images"),
])
@pytest.mark.slow
def test_onnx_metadata_and_signature_are_checked(case, message, trained, tmp_path, capsys):
    out, _ = trained
    good = tmp_path / "good.onnx"
    assert export.cli([str(out / "best.pth"), "-o", str(good)]) == 0
    import onnx

    meta = json.loads(next(p.value for p in onnx.load(str(good)).metadata_props if p.key == "alexnet"))
    changed = {"classes 5": {**meta, "classes": 5}, "eval string": {**meta, "eval": {"size": "224"}},
               "mean text": {**meta, "mean": "grey"}, "a list": [1, 2], "foreign": None,
               "eval size 224": {**meta, "eval": {"size": 224, "resize": 256}}}[case]
    crafted = onnx_with(good, tmp_path, json.dumps(changed), foreign=case == "foreign")
    capsys.readouterr()
    assert predict.cli(["x.jpg", "--weights", str(crafted), "--no-show"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {crafted}") and message in line


# ---------------------------------------------------------------- the smaller ones
def test_hidden_class_folders_and_linked_classes_are_named(tmp_path, capsys):
    root = make_colour_folder(tmp_path / "d", n_train=2, n_val=1)
    shutil.copytree(root / "train" / "red", root / "train" / ".extra")
    log = []
    assert folders.find_classes(str(root / "train"), log.append) == ["blue", "green", "red"]
    assert log == [f"{root / 'train'}: left out 1 hidden folder(s), never classes: .extra"]
    (root / "train" / "crimson").symlink_to(root / "train" / "red")
    with pytest.raises(DataError, match="holds the same image files as .*crimson"):
        folders.class_samples(str(root / "train"), ["blue", "crimson", "green", "red"])


@pytest.mark.slow
def test_resuming_an_earlier_copy_never_discards_later_epochs(colour_data, tmp_path, capsys):
    out = tmp_path / "run"
    run_train(train_args(colour_data, out, "--epochs", "1"))
    shutil.copy(out / "last.pth", out / "epoch1.pth")
    run_train(["--resume", str(out / "last.pth"), "--epochs", "2", "--quiet", "--workers", "0"])
    before = (out / "last.pth").read_bytes()
    capsys.readouterr()
    assert train.cli(["--resume", str(out / "epoch1.pth"), "--epochs", "3"]) == 2
    assert "holds a later epoch (2 > 1)" in one_error_line(capsys.readouterr().err)
    assert (out / "last.pth").read_bytes() == before


def test_outputs_inside_the_data_are_refused(trained, colour_data, tmp_path, capsys):
    out, _ = trained
    inside = colour_data / "val" / "report"
    assert evaluate.cli(["--weights", str(out / "best.pth"), "--data", str(colour_data / "val"),
                         "--output-dir", str(inside)]) == 2
    assert "is inside the data folder" in one_error_line(capsys.readouterr().err)
    assert train.cli(train_args(colour_data, colour_data / "train" / "runs")) == 2
    assert "is inside the data folder" in one_error_line(capsys.readouterr().err)
    assert not inside.exists() and not (colour_data / "train" / "runs").exists()


def test_split_tool_leaves_nothing_half_made(tmp_path, monkeypatch, capsys):
    raw = make_colour_folder(tmp_path / "raw", n_train=4, n_val=1) / "train"
    calls = []

    def cross_device(src, dst):
        calls.append(dst)
        if len(calls) > 3:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))
        return os.link(src, dst)

    monkeypatch.setattr(splitting.os, "link", cross_device)
    dest = tmp_path / "out"
    assert split_data.main([str(raw), "--dest", str(dest), "--link"]) == 2
    assert "hard links cannot cross disks: drop --link to copy" in one_error_line(capsys.readouterr().err)
    assert not dest.exists()
    monkeypatch.undo()
    assert split_data.main([str(raw), "--dest", str(dest)]) == 0  # the re-run is not refused


def test_bench_and_app_name_the_option_at_fault(tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    assert bench.main(["--data", str(photo)]) == 2
    assert "data folder not found" in one_error_line(capsys.readouterr().err)
    import app

    for host, why in (("999.1.1.1", "--host 999.1.1.1: not a host name or address"),
                      ("192.0.2.1", "--host 192.0.2.1: cannot listen on this address")):
        with pytest.raises(app.ArgumentError, match=why.replace(".", r"\.")):
            app.check_listen(host, 7861)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_during_start_up_is_one_line(sig, colour_data, tmp_path):
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *train_args(colour_data, tmp_path / "o")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    time.sleep(0.3)  # importing torch takes longer than this on every machine seen
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig and "Traceback" not in err and err.strip() == "interrupted"
    assert not (tmp_path / "o").exists()

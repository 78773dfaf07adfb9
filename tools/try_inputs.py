"""Point every tool at hostile but realistic inputs, each as a separate process, and tabulate
what happened: the exit code, the first line it printed, the seconds it took and its peak
memory. The table in docs/failure-modes.md is this script's output.

    python tools/try_inputs.py                  # Markdown table on stdout (about 3 minutes)
    python tools/try_inputs.py --only predict   # the cases whose command starts with predict
    python tools/try_inputs.py --first 85       # from case 85 on (issue #33's round three)
    python tools/try_inputs.py --first 160      # from case 160 on (issue #42's round four)

Everything happens in a temporary folder: tiny generated images, a model trained for one
tiny epoch, crafted checkpoints and ONNX files, named pipes, a link to /dev/zero. The
full-disk case runs where a small disk is mounted (root on Linux; 2.7 checkpoints fit, and an
improving epoch writes best.pth and its copy last.pth):

    mkdir -p /tmp/alexnet-small-disk && mount -t tmpfs -o size=450m tmpfs /tmp/alexnet-small-disk
"""
import argparse
import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project folder: its scripts and alexnet/
sys.path.insert(0, str(ROOT / "tests"))

TIMEOUT_S = 60


def run(argv: list[str], cwd: Path, signal_after: float | None = None, sig: int = signal.SIGINT,
        limit_fsize: int | None = None, action=None, look: str | None = None, tmpdir: Path | None = None,
        timeout: float = TIMEOUT_S, env: dict | None = None, hold: Path | None = None,
        close_stderr: bool = False) -> dict:
    """One process: exit code, first line of stderr (else stdout; or the first line holding
    ``look``), seconds, its own peak RSS in MiB (this driver imports no torch, so a child's
    peak is its own, not the copy of the parent it began as). ``env`` changes its environment
    (a value None removes the variable); ``hold`` is a file this driver keeps locked meanwhile,
    as another run of a tool would; ``close_stderr`` starts it with file descriptor 2 closed, as
    ``2>&-`` does."""
    changes = env or {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    env.pop("DISPLAY", None)
    env = {k: v for k, v in (env | changes).items() if v is not None}
    if hold:
        with open(hold, "a+b") as held:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return run(argv, cwd, signal_after, sig, limit_fsize, action, look, tmpdir, timeout, changes,
                       close_stderr=close_stderr)
    if tmpdir:
        tmpdir.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmpdir)

    def limits():
        if limit_fsize:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, limit_fsize))
        if close_stderr:
            os.close(2)

    with tempfile.TemporaryFile("w+", errors="replace") as out, tempfile.TemporaryFile("w+", errors="replace") as err:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, preexec_fn=limits)
        if signal_after is not None:
            time.sleep(signal_after)
            proc.send_signal(sig)
        if action is not None:
            action(proc)
        while True:  # os.wait4, not proc.wait(): it also gives this child's own peak memory
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > timeout:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                return {"code": "HANG", "line": f"killed after {timeout:g} s", "s": timeout, "mib": 0}
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [ln for ln in (stderr.strip().splitlines() or stdout.strip().splitlines()) if ln.strip()]
    if look:
        lines = [ln for ln in (stderr + stdout).splitlines() if look in ln] or lines
    return {"code": proc.returncode, "line": lines[0] if lines else "", "s": seconds, "mib": usage.ru_maxrss / 1024,
            "out": stdout, "err": stderr}


def prepare(work: Path) -> dict:
    """The files the cases point at."""
    import numpy as np
    import torch
    from PIL import Image

    import export
    import train
    from conftest import make_colour_folder, train_args, write_png48

    f = {}
    data = make_colour_folder(work / "data", n_train=4, n_val=2)
    f["data"], f["img"] = data, data / "val" / "red" / "red_0.jpg"
    run_dir = work / "run"
    train.main(train.get_args_parser().parse_args(train_args(data, run_dir, "--epochs", "1")))
    f["run"], f["pth"] = run_dir, run_dir / "best.pth"
    assert export.cli([str(f["pth"]), "-o", str(run_dir / "best.onnx")]) == 0
    f["onnx"] = run_dir / "best.onnx"
    ckpt = torch.load(f["pth"], weights_only=True)

    def crafted(name: str, **changes) -> Path:
        path = work / f"{name}.pth"
        torch.save({**ckpt, **changes}, path)
        return path

    nan = {k: v.clone() for k, v in ckpt["model"].items()}
    nan["classifier.1.weight"][0, 0] = float("nan")
    inf = {k: v.clone() for k, v in ckpt["model"].items()}
    inf["features.0.bias"][1] = float("inf")
    f["nan"], f["inf"] = crafted("nan", model=nan), crafted("inf", model=inf)
    f["eval10"] = crafted("eval10", eval={"size": 10, "resize": 0})
    f["arch"] = crafted("arch", arch="resnet")
    f["classes"] = crafted("classes", classes=["a", "b"])
    f["numstr"] = crafted("numstr", num_classes="3")
    f["mean"] = crafted("mean", mean=[0.5, 0.5])
    f["std0"] = crafted("std0", std=[0.0, 0.5, 0.5])
    f["acc"] = crafted("acc", best_acc=5.0)
    f["cfgtype"] = crafted("cfgtype", config={**ckpt["config"], "epochs": "ten"})
    f["noopt"] = crafted("noopt", optimizer=None)
    truncated = work / "truncated.pth"
    truncated.write_bytes(f["pth"].read_bytes()[: f["pth"].stat().st_size // 2])
    f["truncated"] = truncated
    evil = work / "evil.pth"
    evil.write_bytes(b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94"
                     b"\x8c\x04true\x94\x85\x94R\x94.")
    f["evil"] = evil
    f["jpeg_as_pth"] = work / "photo.pth"
    shutil.copy(f["img"], f["jpeg_as_pth"])
    f["onnx_as_pth"] = work / "model.pth"
    shutil.copy(f["onnx"], f["onnx_as_pth"])
    (work / "notes.pth").write_text("my notes\n")
    f["text"] = work / "notes.pth"
    (work / "empty.pth").write_bytes(b"")
    f["empty"] = work / "empty.pth"
    sparse = work / "huge.pth"
    with open(sparse, "wb") as h:
        h.truncate(5 * 2**30)
    f["huge"] = sparse
    zero = work / "zero.pth"
    zero.symlink_to("/dev/zero")
    f["zero"] = zero
    zero_jpg = work / "zero.jpg"
    zero_jpg.symlink_to("/dev/zero")
    f["zero_jpg"] = zero_jpg
    for name in ("pipe.pth", "pipe.jpg", "pipe.json", "pipe.onnx"):
        os.mkfifo(work / name)
    f["pipe"], f["pipe_jpg"], f["pipe_json"], f["pipe_onnx"] = (work / n for n in
                                                               ("pipe.pth", "pipe.jpg", "pipe.json", "pipe.onnx"))
    big_json = work / "big.json"
    with open(big_json, "wb") as h:
        h.truncate(64 * 2**20)
    f["big_json"] = big_json
    (work / "list.json").write_text('["daisy", "rose"]')
    f["list_json"] = work / "list.json"
    torch.save(ckpt["model"], work / "raw.pth")
    f["raw"] = work / "raw.pth"

    # images of every bit depth
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    f["png48"] = work / "deep48.png"
    write_png48(f["png48"], pixels.astype(np.uint16) * 257)
    f["tif_f01"] = work / "float01.tif"
    Image.fromarray(pixels[..., 0].astype(np.float32) / 255).save(f["tif_f01"])
    f["tif_f255"] = work / "float255.tif"
    Image.fromarray(pixels[..., 0].astype(np.float32)).save(f["tif_f255"])
    f["png16"] = work / "grey16.png"
    Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(f["png16"])
    f["png1"] = work / "bits1.png"
    Image.fromarray(pixels[..., 0] > 127).save(f["png1"])
    f["photo"] = work / "photo.png"
    Image.fromarray(pixels).save(f["photo"])

    # ONNX files: NaN weights, metadata of the wrong types, a foreign model
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(f["onnx"]))
    init = next(i for i in proto.graph.initializer if numpy_helper.to_array(i).ndim == 2)
    arr = numpy_helper.to_array(init).copy()
    arr[0, 0] = np.nan
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    f["onnx_nan"] = work / "nan.onnx"
    onnx.save(proto, str(f["onnx_nan"]))
    meta = json.loads(next(p.value for p in onnx.load(str(f["onnx"])).metadata_props if p.key == "alexnet"))
    for name, changed in (("onnx_classes", {**meta, "classes": 5}), ("onnx_eval", {**meta, "eval": {"size": "224"}}),
                          ("onnx_notjson", None)):
        proto = onnx.load(str(f["onnx"]))
        entry = next(p for p in proto.metadata_props if p.key == "alexnet")
        entry.value = "{not json" if changed is None else json.dumps(changed)
        f[name] = work / f"{name}.onnx"
        onnx.save(proto, str(f[name]))
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 10])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 10])
    foreign = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17)])
    foreign.ir_version = 8
    f["onnx_foreign"] = work / "foreign.onnx"
    onnx.save(foreign, str(f["onnx_foreign"]))
    f["jpeg_as_onnx"] = work / "photo.onnx"
    shutil.copy(f["img"], f["jpeg_as_onnx"])

    # data folders with traps
    f["data_fifo"] = make_colour_folder(work / "data_fifo", n_train=4, n_val=2)
    os.mkfifo(f["data_fifo"] / "train" / "red" / "stuck.jpg")
    f["data_hidden"] = make_colour_folder(work / "data_hidden", n_train=4, n_val=2)
    shutil.copytree(f["data_hidden"] / "train" / "red", f["data_hidden"] / "train" / ".extra")
    f["data_link"] = make_colour_folder(work / "data_link", n_train=4, n_val=2)
    for part in ("train", "val"):
        (f["data_link"] / part / "crimson").symlink_to(f["data_link"] / part / "red")
    f["data_deep"] = make_colour_folder(work / "data_deep", n_train=4, n_val=2)
    shutil.copy(f["png48"], f["data_deep"] / "train" / "red" / "deep48.png")
    shutil.copy(f["tif_f01"], f["data_deep"] / "train" / "green" / "float01.tif")
    shutil.copy(f["png16"], f["data_deep"] / "val" / "blue" / "grey16.png")
    f["data_vanish"] = make_colour_folder(work / "data_vanish", n_train=10, n_val=2)
    f["raw_fifo"] = work / "raw_fifo"
    shutil.copytree(f["data"] / "train", f["raw_fifo"])
    os.mkfifo(f["raw_fifo"] / "red" / "stuck.jpg")
    f["pred_dir"] = work / "pred_dir"
    shutil.copytree(f["data"] / "val" / "red", f["pred_dir"])
    os.mkfifo(f["pred_dir"] / "stuck.jpg")

    # an older run, to be overwritten by a run of other classes
    f["old_run"] = work / "old_run"
    shutil.copytree(run_dir, f["old_run"], ignore=shutil.ignore_patterns(".cache"))
    (f["old_run"] / "eval").mkdir()
    (f["old_run"] / "eval" / "summary.json").write_text("{}")
    f["four"] = make_colour_folder(work / "four", n_train=4, n_val=2)
    shutil.copytree(f["four"] / "train" / "red", f["four"] / "train" / "violet")
    shutil.copytree(f["four"] / "val" / "red", f["four"] / "val" / "violet")
    # a finished two-epoch run and a copy of its first epoch as best
    f["later"] = work / "later"
    train.main(train.get_args_parser().parse_args(train_args(data, f["later"], "--epochs", "1")))
    shutil.copy(f["later"] / "last.pth", work / "epoch1.pth")
    train.main(train.get_args_parser().parse_args(["--resume", str(f["later"] / "last.pth"), "--epochs", "2",
                                                   "--quiet", "--workers", "0"]))
    shutil.copy(work / "epoch1.pth", f["later"] / "epoch1.pth")
    # bf16 run to resume
    f["bf16"] = work / "bf16"
    train.main(train.get_args_parser().parse_args(train_args(data, f["bf16"], "--epochs", "1", "--precision", "bf16")))
    small = Path("/tmp/alexnet-small-disk")
    f["small"] = small if os.path.ismount(small) else None
    prepare_round_three(f, work, ckpt, crafted)
    prepare_round_four(f, work, ckpt, crafted)
    return f


CHINESE = {"blue": "玫瑰", "green": "郁金香", "red": "向日葵"}
FORMULAS = {"blue": "=1+1", "green": "+cmd", "red": "@sum"}


def prepare_round_three(f: dict, work: Path, ckpt: dict, crafted) -> None:
    """Round three (issue #33): Chinese and formula-like class names, files where class folders
    belong, a model with only best.pth left, phone-sized photos, repeated and broken photos."""
    import numpy as np
    from PIL import Image

    from conftest import make_colour_folder

    def renamed(name: str, names: dict) -> Path:
        root = make_colour_folder(work / name, n_train=4, n_val=2)
        for part in ("train", "val"):
            for old, new in names.items():
                (root / part / old).rename(root / part / new)
        return root

    f["zh_data"], f["formula_data"] = renamed("zh_data", CHINESE), renamed("formula_data", FORMULAS)
    f["zh_pth"] = crafted("zh", classes=[CHINESE[c] for c in ckpt["classes"]])
    f["formula_pth"] = crafted("formula", classes=[FORMULAS[c] for c in ckpt["classes"]])
    f["zh_raw"] = work / "zh_raw"
    shutil.copytree(f["zh_data"] / "train", f["zh_raw"])
    f["zh_photo"] = work / "玫瑰的照片.jpg"
    shutil.copy(f["img"], f["zh_photo"])
    for kind in ("plain", "zip", "dangling", "photo", "license"):
        root = f[f"class_{kind}"] = make_colour_folder(work / f"class_{kind}", n_train=4, n_val=2)
        train_dir = root / "train"
        if kind == "plain":
            shutil.copy(f["img"], train_dir / "sunflower")
        elif kind == "zip":
            with zipfile.ZipFile(train_dir / "sunflower.zip", "w") as z:
                z.write(f["img"], "sunflower/0.jpg")
        elif kind == "dangling":
            (train_dir / "sunflower").symlink_to(work / "moved-away")
        elif kind == "photo":
            shutil.copy(f["img"], train_dir / "unsorted.jpg")
        else:
            (train_dir / "LICENSE.txt").write_text("CC-BY 2.0\n")
    f["only_best"] = work / "only_best"
    f["only_best"].mkdir()
    shutil.copy(f["pth"], f["only_best"] / "best.pth")
    # phone photos: 108 Mpx (over Pillow's 89 Mpx), 300 Mpx (over twice it, which Image.open refuses)
    noise = np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    f["big_jpg"], f["big_png"], f["huge_jpg"] = work / "phone_108mp.jpg", work / "scan_108mp.png", work / "300mp.jpg"
    photo = Image.fromarray(noise).resize((12000, 9000))
    photo.save(f["big_jpg"], quality=85)
    photo.convert("L").save(f["big_png"], compress_level=1)
    Image.fromarray(noise[..., 0]).resize((20000, 15000)).save(f["huge_jpg"], quality=85)
    f["big_data"] = make_colour_folder(work / "big_data", n_train=4, n_val=2)
    shutil.copy(f["big_jpg"], f["big_data"] / "train" / "red" / "phone.jpg")
    shutil.copy(f["big_jpg"], f["big_data"] / "val" / "red" / "phone.jpg")
    f["formula_photos"] = work / "formula_photos"
    f["formula_photos"].mkdir()
    for name in ("=HYPERLINK(1).jpg", "+1.jpg", "-2.jpg", "@sum.jpg"):
        shutil.copy(f["img"], f["formula_photos"] / name)
    (f["formula_photos"] / "=broken.jpg").write_bytes(b"")
    f["retry"] = work / "retry"
    shutil.copytree(f["data"] / "val" / "red", f["retry"])
    (f["retry"] / "broken.jpg").write_bytes(b"not a photo")
    import onnx

    proto = onnx.load(str(f["onnx"]))
    entry = next(p for p in proto.metadata_props if p.key == "alexnet")
    entry.value = json.dumps(json.loads(entry.value) | {"eval": {"size": 224, "resize": 256}})
    f["onnx_size"] = work / "size224.onnx"
    onnx.save(proto, str(f["onnx_size"]))
    f["sure_pth"] = crafted("sure", min_confidence=0.999)


def cases(f: dict, work: Path) -> list[tuple[str, list[str], dict]]:
    """(what, argv, run options) for every case."""
    img, pth, onnx_ = str(f["img"]), str(f["pth"]), str(f["onnx"])
    tiny = ["--img-size", "64", "--batch-size", "8", "--quiet", "--workers", "0", "--precision", "fp32"]
    p = lambda *a: ["predict.py", *map(str, a), "--no-show"]  # noqa: E731
    t = lambda data, out, *a: ["train.py", "--data", str(data), "--output-dir", str(out), *tiny, *map(str, a)]  # noqa
    c = [
        ("weights: a link to /dev/zero", p(img, "--weights", f["zero"]), {}),
        ("weights: a named pipe", p(img, "--weights", f["pipe"]), {}),
        ("image: a named pipe called .jpg", p(f["pipe_jpg"], "--weights", pth), {}),
        ("image: a link to /dev/zero called .jpg", p(f["zero_jpg"], "--weights", pth), {}),
        ("folder holding a named pipe .jpg", p(f["pred_dir"], "--weights", pth), {}),
        ("weights: a JPEG named .pth", p(img, "--weights", f["jpeg_as_pth"]), {}),
        ("weights: an ONNX file named .pth", p(img, "--weights", f["onnx_as_pth"]), {}),
        ("weights: a text file", p(img, "--weights", f["text"]), {}),
        ("weights: an empty file", p(img, "--weights", f["empty"]), {}),
        ("weights: a truncated checkpoint", p(img, "--weights", f["truncated"]), {}),
        ("weights: a pickle that would run code", p(img, "--weights", f["evil"]), {}),
        ("weights: a 5 GiB (sparse) file", p(img, "--weights", f["huge"]), {}),
        ("weights: a folder", p(img, "--weights", work), {}),
        ("weights: missing", p(img, "--weights", work / "nope.pth"), {}),
        ("weights: NaN in classifier.1.weight", p(img, "--weights", f["nan"]), {}),
        ("weights: inf in features.0.bias", p(img, "--weights", f["inf"]), {}),
        ("checkpoint: eval size 10", p(img, "--weights", f["eval10"]), {}),
        ("checkpoint: unknown arch", p(img, "--weights", f["arch"]), {}),
        ("checkpoint: 2 class names for 3 outputs", p(img, "--weights", f["classes"]), {}),
        ("checkpoint: num_classes a string", p(img, "--weights", f["numstr"]), {}),
        ("checkpoint: mean of 2 numbers", p(img, "--weights", f["mean"]), {}),
        ("checkpoint: std 0", p(img, "--weights", f["std0"]), {}),
        ("checkpoint: best_acc 5", p(img, "--weights", f["acc"]), {}),
        ("class indices: a named pipe", p(img, "--weights", f["raw"], "--class-indices", f["pipe_json"]), {}),
        ("class indices: 64 MiB (sparse)", p(img, "--weights", f["raw"], "--class-indices", f["big_json"]), {}),
        ("class indices: a JSON list", p(img, "--weights", f["raw"], "--class-indices", f["list_json"]), {}),
        ("--save over the input photo", p(f["photo"], "--weights", pth, "--save", f["photo"]), {}),
        ("--save fig.xyz", p(img, "--weights", pth, "--save", work / "fig.xyz"), {}),
        ("--save over a photo that is no input", p(img, "--weights", pth, "--save", f["photo"]), {}),
        ("--save over a checkpoint", p(img, "--weights", pth, "--save", f["later"] / "epoch1.pth"), {}),
        ("--save inside the input folder", p(f["pred_dir"], "--weights", pth, "--save", f["pred_dir"] / "f.png"), {}),
        ("image: 48-bit RGB PNG", p(f["png48"], "--weights", pth), {}),
        ("image: float32 TIFF in 0..1", p(f["tif_f01"], "--weights", pth), {}),
        ("image: float32 TIFF in 0..255", p(f["tif_f255"], "--weights", pth), {}),
        ("image: 16-bit greyscale PNG", p(f["png16"], "--weights", pth), {}),
        ("image: 1-bit PNG", p(f["png1"], "--weights", pth), {}),
        ("image: 48-bit PNG through ONNX", p(f["png48"], "--weights", onnx_), {}),
        ("ONNX: NaN in a weight", p(img, "--weights", f["onnx_nan"]), {}),
        ("ONNX: metadata classes = 5", p(img, "--weights", f["onnx_classes"]), {}),
        ("ONNX: metadata eval size a string", p(img, "--weights", f["onnx_eval"]), {}),
        ("ONNX: metadata not JSON", p(img, "--weights", f["onnx_notjson"]), {}),
        ("ONNX: a foreign model (1 x 10 in, 1 x 10 out)", p(img, "--weights", f["onnx_foreign"]), {}),
        ("ONNX: a JPEG named .onnx", p(img, "--weights", f["jpeg_as_onnx"]), {}),
        ("ONNX: a named pipe", p(img, "--weights", f["pipe_onnx"]), {}),
        ("export -o the training checkpoint", ["export.py", pth, "-o", str(f["run"] / "last.pth")], {}),
        ("export -o its own input", ["export.py", pth, "-o", pth], {}),
        ("export -o a JPEG named .onnx", ["export.py", pth, "-o", str(f["jpeg_as_onnx"])], {}),
        ("export a NaN checkpoint", ["export.py", str(f["nan"]), "-o", str(work / "n.onnx")], {}),
        ("export a named pipe", ["export.py", str(f["pipe"]), "-o", str(work / "p.onnx")], {}),
        ("export a checkpoint with eval size 10", ["export.py", str(f["eval10"]), "-o", str(work / "e.onnx")], {}),
        ("evaluate NaN weights", ["evaluate.py", "--weights", str(f["nan"]), "--data", str(f["data"] / "val")], {}),
        ("evaluate --output-dir inside the data", ["evaluate.py", "--weights", pth, "--data", str(f["data"] / "val"),
                                                   "--output-dir", str(f["data"] / "val" / "report")], {}),
        ("evaluate --weights a named pipe", ["evaluate.py", "--weights", str(f["pipe"])], {}),
        ("evaluate --weights foreign ONNX", ["evaluate.py", "--weights", str(f["onnx_foreign"])], {}),
        ("train --overwrite an older run (3 -> 4 classes)", t(f["four"], f["old_run"], "--epochs", "1",
                                                               "--overwrite"), {"look": "--overwrite"}),
        ("train into an older run without --overwrite", t(f["four"], f["old_run"], "--epochs", "1"), {}),
        ("train on 48-bit PNG, float TIFF, 16-bit PNG", t(f["data_deep"], work / "o_deep", "--epochs", "1"),
         {"look": "done:"}),
        ("train: a named pipe in train/red", t(f["data_fifo"], work / "o_fifo", "--epochs", "1"), {"look": "skipped"}),
        ("train: a hidden class folder .extra", t(f["data_hidden"], work / "o_hidden", "--epochs", "1"), {}),
        ("train: a class folder linking to another", t(f["data_link"], work / "o_link", "--epochs", "1"), {}),
        ("train --output-dir inside --data", t(f["data"], f["data"] / "train" / "runs", "--epochs", "1"), {}),
        ("train --weights NaN checkpoint", t(f["data"], work / "o_nan", "--epochs", "1", "--weights", f["nan"]), {}),
        ("train --resume a JPEG", ["train.py", "--resume", str(f["jpeg_as_pth"])], {}),
        ("train --resume an .onnx", ["train.py", "--resume", onnx_], {}),
        ("train --resume config.epochs 'ten'", ["train.py", "--resume", str(f["cfgtype"])], {}),
        ("train --resume without optimizer state", ["train.py", "--resume", str(f["noopt"])], {}),
        ("train --resume epoch-1 copy beside a later last.pth", ["train.py", "--resume", str(f["later"] / "epoch1.pth"),
                                                                 "--epochs", "3"], {}),
        ("train --resume a bf16 run keeps bf16", ["train.py", "--resume", str(f["bf16"] / "last.pth"), "--epochs", "2",
                                                  "--quiet"], {"look": "cpu "}),
        ("train --precision auto", ["train.py", "--data", str(f["data"]), "--output-dir", str(work / "o_auto"),
                                    *tiny[:-2], "--epochs", "1", "--precision", "auto"], {"look": "cpu "}),
        ("train: an image deleted after epoch 1 (uncached)", t(f["data_vanish"], work / "o_vanish", "--epochs", "30",
                                                               "--cache-mem", "0"),
         {"action": vanish(f["data_vanish"] / "train" / "red" / "red_3.jpg", work / "o_vanish")}),
        ("train: checkpoint over the file-size limit (resume)", ["train.py", "--resume", str(f["later"] / "last.pth"),
                                                                 "--epochs", "3", "--quiet"],
         {"limit_fsize": 8 * 2**20}),
        ("train: Ctrl-C during start-up", ["train.py", "--data", str(f["data"]), "--output-dir", str(work / "o_int")],
         {"signal_after": 0.4}),
        ("app --host 999.1.1.1", ["app.py", "--weights", pth, "--host", "999.1.1.1"], {}),
        ("app --host 192.0.2.1 (not this machine)", ["app.py", "--weights", pth, "--host", "192.0.2.1"], {}),
        ("app --weights NaN ONNX", ["app.py", "--weights", str(f["onnx_nan"]), "--port", "7999"], {}),
        ("split --link to another disk", ["data_set/split_data.py", str(f["data"] / "train"), "--dest",
                                          "/dev/shm/alexnet-split-test", "--link"], {}),
        ("split a folder holding a named pipe", ["data_set/split_data.py", str(f["raw_fifo"]), "--dest",
                                                 str(work / "split_fifo")], {"look": "skipped"}),
        ("bench --data a file", ["tools/bench.py", "--data", img], {}),
        ("bench on data holding a named pipe (tiny)", ["tools/bench.py", "--data", str(f["data_fifo"]), "--repeats", "1",
                                                       "--steps", "1", "--predict-runs", "1", "--batch-size", "4"],
         {"look": "training epoch"}),
        ("bench: SIGTERM after 8 s", ["tools/bench.py", "--repeats", "1"],
         {"signal_after": 8.0, "sig": signal.SIGTERM, "tmpdir": work / "tmp_b"}),
        ("bench: its temporary folder after SIGTERM", ["-c", "import os, sys; print('left in TMPDIR:', "
                                                      "os.listdir(sys.argv[1]))", str(work / "tmp_b")], {}),
        ("bench --data without val/", ["tools/bench.py", "--data", str(f["raw_fifo"])], {}),
    ]
    c += round_three(f, work, p, t)
    c += round_four(f, work, p, t)
    if f["small"]:
        c.append(("train: a full disk at a checkpoint write", t(f["data"], f["small"] / "run", "--epochs", "2",
                                                                "--cache-dir", str(work / "cache_small")), {}))
        c.append(("train: its last.pth after the full disk", ["-c", "import torch, sys; print('last.pth epoch', "
                                                            "torch.load(sys.argv[1], weights_only=True)['epoch'])",
                                                            str(f["small"] / "run" / "last.pth")], {}))
    return c


def round_three(f: dict, work: Path, p, t) -> list[tuple[str, list[str], dict]]:
    """Issue #33's cases, in order: some use what an earlier one left (a predictions file)."""
    img, pth, onnx_ = str(f["img"]), str(f["pth"]), str(f["onnx"])
    c_locale = {"env": {"LC_ALL": "C", "LANG": None, "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}}
    dead_x = {"env": {"DISPLAY": ":93", "MPLBACKEND": None}}
    long = "p" * 248  # with a 4-character extension: 252, under the 255 bytes a name may have
    show = lambda *code: ["-c", "import sys, pathlib; " + "; ".join(code)]  # noqa: E731
    first_row = "print(pathlib.Path(sys.argv[1]).read_text(encoding='utf-8-sig').splitlines()[{}][:150])"
    ev = lambda *a: ["evaluate.py", *map(str, a), "--quiet", "--neighbours", "0"]  # noqa: E731
    ex = lambda *a: ["export.py", pth, *map(str, a)]  # noqa: E731
    return [
        ("Chinese class names: predict --save", p(img, "--weights", f["zh_pth"], "--save", work / "zh.png"), {}),
        ("Chinese class names: the console columns", p(img, "--weights", f["zh_pth"]), {"look": "郁金香"}),
        ("Chinese class folders: train", t(f["zh_data"], work / "o_zh", "--epochs", "1"), {"look": "done:"}),
        ("Chinese class folders: evaluate", ev("--weights", work / "o_zh" / "best.pth", "--data", f["zh_data"] / "val",
                                               "--output-dir", work / "e_zh"), {"look": "top-1"}),
        ("Chinese class folders: check.py", ["data_set/check.py", str(f["zh_data"]), "--output-dir",
                                              str(work / "c_zh")], {"look": "report"}),
        ("Chinese photo file name", p(f["zh_photo"], "--weights", pth), {}),
        ("LC_ALL=C, PYTHONUTF8=0: split Chinese folders", ["data_set/split_data.py", str(f["zh_raw"]), "--dest",
                                                           str(work / "s_zh")], c_locale),
        ("LC_ALL=C, PYTHONUTF8=0: train on Chinese folders", t(f["zh_data"], work / "o_zh_c", "--epochs", "1"),
         c_locale),
        ("LC_ALL=C, PYTHONUTF8=0: predict with Chinese names", p(img, "--weights", f["zh_pth"]), c_locale),
        ("evaluate: per_class.csv starts with a BOM", show("print(pathlib.Path(sys.argv[1]).read_bytes()[:12])") +
         [str(work / "e_zh" / "per_class.csv")], {}),
        ("--lr 10 with AdamW (the loss explodes, finite)", t(f["data"], work / "o_lr10", "--epochs", "3", "--lr", "10"),
         {}),
        ("--lr 10 with SGD", t(f["data"], work / "o_sgd10", "--epochs", "3", "--lr", "10", "--opt", "sgd"), {}),
        ("--lr 1000 (out of range)", t(f["data"], work / "o_lr1000", "--epochs", "2", "--lr", "1000"), {}),
        ("--lr 10, recipe tutorial (Adam)", t(f["data"], work / "o_tut10", "--epochs", "2", "--lr", "10", "--recipe",
                                             "tutorial"), {}),
        ("--lr 0.01 with AdamW (10x the recipe's)", t(f["data"], work / "o_lr01", "--epochs", "3", "--lr", "0.01"),
         {"look": "done:"}),
        ("--lr 1e-8 (learns nothing, no alarm)", t(f["data"], work / "o_lr1e8", "--epochs", "2", "--lr", "1e-8"),
         {"look": "done:"}),
        ("train/sunflower: a file without extension", t(f["class_plain"], work / "o_plain", "--epochs", "1"), {}),
        ("train/sunflower.zip: an archive", t(f["class_zip"], work / "o_zip", "--epochs", "1"), {}),
        ("train/sunflower: a dangling link", t(f["class_dangling"], work / "o_dangling", "--epochs", "1"), {}),
        ("train/unsorted.jpg: a photo outside the classes", t(f["class_photo"], work / "o_photo", "--epochs", "1"), {}),
        ("train/LICENSE.txt beside the classes", t(f["class_license"], work / "o_license", "--epochs", "1"),
         {"look": "LICENSE"}),
        ("split a source holding an archive", ["data_set/split_data.py", str(f["class_zip"] / "train"), "--dest",
                                               str(work / "s_zip")], {}),
        ("evaluate --data holding a dangling link", ev("--weights", pth, "--data", f["class_dangling"] / "train",
                                                       "--output-dir", work / "e_dangling"), {}),
        ("check.py on data holding an archive", ["data_set/check.py", str(f["class_zip"]), "--output-dir",
                                                 str(work / "c_zip")], {}),
        ("label_issues.py on data holding a plain file", ["data_set/label_issues.py", str(f["class_plain"]),
                                                          "--output-dir", str(work / "l_plain")], {}),
        ("predict --output: a first run", p(f["data"] / "val", "--weights", pth, "--output", work / "held.csv"), {}),
        ("predict --output while another run holds it", p(f["data"] / "val", "--weights", pth, "--output",
                                                          work / "held.csv"), {"hold": work / "held.csv"}),
        ("predict --output .json while another run holds it", p(f["data"] / "val", "--weights", pth, "--output",
                                                                work / "held.json"), {"hold": work / "held.json"}),
        ("evaluate --calibrate while train.py holds the folder", ev("--weights", f["run"] / "best.pth", "--calibrate",
                                                                     "--output-dir", work / "e_cal"),
         {"hold": f["run"] / ".lock"}),
        ("evaluate --store-threshold while train.py holds it", ev("--weights", f["run"] / "best.pth", "--ood",
                                                                   f["class_license"] / "val" / "red",
                                                                   "--store-threshold", "--output-dir", work / "e_thr"),
         {"hold": f["run"] / ".lock"}),
        ("after 1 epoch: best.pth and last.pth", show("import os", "a, b = (os.stat(pathlib.Path(sys.argv[1]) / n) "
                                                      "for n in ('best.pth', 'last.pth'))",
                                                      "print('two files:', a.st_ino != b.st_ino, 'links:', a.st_nlink, "
                                                      "b.st_nlink)") + [str(f["run"])], {}),
        ("--resume auto where only best.pth is left", ["train.py", "--resume", "auto", "--output-dir",
                                                       str(f["only_best"]), "--data", str(f["data"]), "--img-size",
                                                       "64", "--quiet", "--workers", "0"], {}),
        ("the command that hint gives", t(f["data"], work / "o_from_best", "--epochs", "1", "--weights",
                                          f["only_best"] / "best.pth"), {"look": "done:"}),
        ("a 108-megapixel phone photo (12000x9000 JPEG)", p(f["big_jpg"], "--weights", pth), {}),
        ("the same photo through ONNX", p(f["big_jpg"], "--weights", onnx_), {}),
        ("a 300-megapixel JPEG (20000x15000)", p(f["huge_jpg"], "--weights", pth), {}),
        ("a 108-megapixel PNG", p(f["big_png"], "--weights", pth), {}),
        ("train with a 108-megapixel photo in each split", t(f["big_data"], work / "o_big", "--epochs", "1"),
         {"look": "done:"}),
        ("evaluate a split holding it", ev("--weights", pth, "--data", f["big_data"] / "val", "--output-dir",
                                           work / "e_big"), {"look": "top-1"}),
        ("check.py on it", ["data_set/check.py", str(f["big_data"]), "--output-dir", str(work / "c_big")],
         {"look": "report"}),
        ("photos named =HYPERLINK(1), +1, -2, @sum: --output", p(f["formula_photos"], "--weights", pth, "--output",
                                                                 work / "formula.csv"), {}),
        ("  ... its first rows", show(first_row.format(1)) + [str(work / "formula.csv")], {}),
        ("  ... the same command again", p(f["formula_photos"], "--weights", pth, "--output", work / "formula.csv"),
         {}),
        ("class names =1+1, +cmd, @sum: evaluate", ev("--weights", f["formula_pth"], "--data", f["formula_data"] / "val",
                                                      "--output-dir", work / "e_formula", "--topk", "2"),
         {"look": "top-1"}),
        ("  ... per_class.csv", show(first_row.format(1)) + [str(work / "e_formula" / "per_class.csv")], {}),
        ("  ... predictions.csv header (top-k columns)", show(first_row.format(0)) +
         [str(work / "e_formula" / "predictions.csv")], {}),
        ("  ... predict --output with those names", p(img, "--weights", f["formula_pth"], "--output",
                                                       work / "formula_names.csv"), {}),
        ("  ... its row", show(first_row.format(1)) + [str(work / "formula_names.csv")], {}),
        ("a 252-character --save name", p(img, "--weights", pth, "--save", work / f"{long}.png"), {}),
        ("a 252-character --output name", p(img, "--weights", pth, "--output", work / f"{long}.csv"), {}),
        ("a 252-character export -o name", ex("-o", work / f"{long}.onnx"), {}),
        ("a 260-character --output name (too long)", p(img, "--weights", pth, "--output",
                                                        work / f"{long}12345678.csv"), {}),
        ("a 260-character export -o name (too long)", ex("-o", work / f"{long}12345678.onnx"), {}),
        ("a 260-character --save name (too long)", p(img, "--weights", pth, "--save", work / f"{long}12345678.png"),
         {}),
        ("a 252-character --output-dir name", t(f["data"], work / ("d" * 252), "--epochs", "1"), {"look": "done:"}),
        ("the same photo twice and its folder: --output", p(img, img, f["data"] / "val" / "red", "--weights", pth,
                                                            "--output", work / "twice.csv"), {}),
        ("  ... rows written", show("print(len(pathlib.Path(sys.argv[1]).read_text().splitlines()) - 1, 'rows')") +
         [str(work / "twice.csv")], {}),
        ("a broken photo: --output", p(f["retry"], "--weights", pth, "--output", work / "retry.csv"), {}),
        ("  ... the photo fixed", show("import shutil", "shutil.copy(sys.argv[1], sys.argv[2])", "print('fixed')") +
         [img, str(f["retry"] / "broken.jpg")], {}),
        ("  ... the same command again", p(f["retry"], "--weights", pth, "--output", work / "retry.csv"), {}),
        ("--output written at --min-confidence 0.5", p(img, "--weights", pth, "--output", work / "mc.csv",
                                                       "--min-confidence", "0.5"), {}),
        ("  ... continued at --min-confidence 0.6", p(img, "--weights", pth, "--output", work / "mc.csv",
                                                      "--min-confidence", "0.6"), {}),
        ("  ... continued without it", p(img, "--weights", pth, "--output", work / "mc.csv"), {}),
        ("  ... the same as .json, then 0.6", p(img, "--weights", pth, "--output", work / "mc.json",
                                                  "--min-confidence", "0.5"), {}),
        ("  ... .json continued at 0.6", p(img, "--weights", pth, "--output", work / "mc.json", "--min-confidence",
                                           "0.6"), {}),
        ("export --opset 7", ex("-o", work / "o7.onnx", "--opset", "7"), {}),
        ("export --opset 17", ex("-o", work / "o17.onnx", "--opset", "17"), {}),
        ("export --opset 99", ex("-o", work / "o99.onnx", "--opset", "99"), {}),
        ("export --opset -1", ex("-o", work / "o-1.onnx", "--opset", "-1"), {}),
        ("export --opset 20", ex("-o", work / "o20.onnx", "--opset", "20"), {}),
        ("ONNX: graph 64 px, metadata eval size 224", p(img, "--weights", f["onnx_size"]), {}),
        ("ONNX: the same in app.py", ["app.py", "--weights", str(f["onnx_size"]), "--port", "7998"], {}),
        ("DISPLAY=:93, no X server there", p(img, "--weights", pth)[:-1], dead_x | {"look": "display"}),
        ("DISPLAY=:93 with --save", p(img, "--weights", pth, "--save", work / "dead_x.png")[:-1],
         dead_x | {"look": "display"}),
        ("a stored --min-confidence 0.999: predict auto", p(img, "--weights", f["sure_pth"], "--min-confidence",
                                                            "auto"), {}),
    ]


WEB_FORMATS = ("a.jfif", "b.gif", "c.ico")  # what browsers on Windows save, animations, icons
LOOKALIKE = {"case": ("rose", "Rose"), "nfc-nfd": ("caf\u00e9", "cafe\u0301"), "zero-width": ("tulip", "tu\u200blip")}


def prepare_round_four(f: dict, work: Path, ckpt: dict, crafted) -> None:
    """Round four (issue #42): HEIC photos, the formats browsers save, a val/ that is train/,
    class names that look the same or hold a newline, a hub cache with a wrong file, data too
    small for the learning rate to matter, labels that carry no signal, old checkpoints, and
    names that reach the web page's Markdown."""
    import numpy as np
    import pillow_heif
    import torch
    from PIL import Image

    from checkpoint_fixtures import fixtures, inflate
    from conftest import make_colour_folder

    noise = Image.effect_noise((80, 60), 40).convert("RGB")
    f["heic"], f["heic_jpg"] = work / "IMG_0001.HEIC", work / "IMG_0002.jpg"
    pillow_heif.from_pillow(noise).save(f["heic"], quality=90)
    shutil.copy(f["heic"], f["heic_jpg"])
    f["heic_dir"] = work / "phone"
    f["heic_dir"].mkdir()
    shutil.copy(f["heic"], f["heic_dir"])
    shutil.copy(f["img"], f["heic_dir"])
    f["heic_data"] = make_colour_folder(work / "heic_data", n_train=4, n_val=2)
    for split in ("train", "val"):
        shutil.copy(f["heic"], f["heic_data"] / split / "red")
    f["web"] = work / "saved"
    f["web"].mkdir()
    for name in WEB_FORMATS:
        noise.save(f["web"] / name, format="JPEG" if name.endswith(".jfif") else None)
    (f["web"] / "d.jxl").write_bytes(b"\xff\x0a")
    f["web_data"] = make_colour_folder(work / "web_data", n_train=4, n_val=2)
    for name in (*WEB_FORMATS, "d.jxl"):
        shutil.copy(f["web"] / name, f["web_data"] / "train" / "red")
    f["val_is_train"] = work / "val_is_train"
    shutil.copytree(f["data"] / "train", f["val_is_train"] / "train")
    (f["val_is_train"] / "val").symlink_to(f["val_is_train"] / "train")
    f["val_red_link"] = work / "val_red_link"
    shutil.copytree(f["data"], f["val_red_link"])
    shutil.rmtree(f["val_red_link"] / "val" / "red")
    (f["val_red_link"] / "val" / "red").symlink_to(f["val_red_link"] / "train" / "red")
    for kind, (first, second) in LOOKALIKE.items():
        root = f[f"look_{kind}"] = make_colour_folder(work / f"look_{kind}", n_train=4, n_val=2)
        for split in ("train", "val"):
            (root / split / "red").rename(root / split / first)
            (root / split / "green").rename(root / split / second)
    f["newline_data"] = make_colour_folder(work / "newline_data", n_train=4, n_val=2)
    for split in ("train", "val"):
        (f["newline_data"] / split / "red").rename(f["newline_data"] / split / "red\nrose")
    f["newline_pth"] = crafted("newline", classes=["blue", "green", "red\nrose"])
    # torch's hub cache holding a file of the right name and the wrong contents, and homes that cannot be one
    f["hub_bad"] = work / "hub_bad"
    (f["hub_bad"] / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(ckpt["model"], f["hub_bad"] / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    f["a_file"] = work / "a_file"
    f["a_file"].write_text("")
    # a folder that holds a trained model, for --lr find
    f["model_run"] = work / "model_run"
    shutil.copytree(f["run"], f["model_run"], ignore=shutil.ignore_patterns(".cache"))
    # 200 classes of 2 training photos and 1 validation photo: too small to judge a learning rate by
    rng = np.random.default_rng(2)
    f["many_small"] = work / "many_small"
    for k in range(200):
        for split, n in (("train", 2), ("val", 1)):
            folder = f["many_small"] / split / f"c{k:03d}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    # labels that carry no signal: noise pictures in 5 classes, 60 a class (enough to judge a rate by)
    f["noise_labels"] = work / "noise_labels"
    for split, n in (("train", 300), ("val", 50)):
        for i in range(n):
            folder = f["noise_labels"] / split / f"c{i % 5}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    for fixture in fixtures():
        f[f"old_{fixture.stem}"] = work / f"{fixture.stem}.pth"
        torch.save(inflate(torch.load(fixture, weights_only=True)), f[f"old_{fixture.stem}"])
    hostile = work / "my`model<img src=x onerror=alert(1)>.pth"
    torch.save({**ckpt, "config": {**ckpt["config"], "data": "/photos/data`<b>bold</b>$x$"},
                "classes": ["*a*", "b_c_", "[d](http://e)"]}, hostile)
    f["hostile_card"] = hostile


PASTE_ADVICE = ("import shlex, subprocess, sys; "
                "said = subprocess.run([sys.executable, *sys.argv[1:]], capture_output=True, text=True).stdout; "
                "advice = next(x for x in said.splitlines() if x.startswith('train with it: '))[15:]; "
                "r = subprocess.run([sys.executable, *shlex.split(advice)[1:]], capture_output=True, text=True); "
                "print('the advice, run: exit', r.returncode, [x for x in r.stdout.splitlines() "
                "if x.startswith('done:')][:1] or r.stderr[-200:])")
OLD_ADVICE = ("import shlex, sys; sys.path[:0] = ['.']; import train; from alexnet import settings; "
              "parse = train.get_args_parser().parse_args; "
              "cfg = settings.resolve_config(parse(['--resume', sys.argv[1], '--data', sys.argv[2], '--epochs', '2']))[0]; "
              "advice = settings.command_line(cfg, lr=cfg.lr / 10, overwrite=True); "
              "settings.resolve_config(parse(shlex.split(advice)[2:])); print('accepted:', advice)")


def round_four(f: dict, work: Path, p, t) -> list[tuple[str, list[str], dict]]:
    """Issue #42's cases, in order: some read what an earlier one left."""
    img, pth, onnx_ = str(f["img"]), str(f["pth"]), str(f["onnx"])
    ev = lambda *a: ["evaluate.py", "--weights", pth, *map(str, a), "--quiet", "--neighbours", "0"]  # noqa: E731
    chk = lambda data, name: ["data_set/check.py", str(data), "--output-dir", str(work / f"c4_{name}")]  # noqa
    split = lambda src, name: ["data_set/split_data.py", str(src), "--dest", str(work / f"s4_{name}")]  # noqa
    show = lambda *code: ["-c", "import sys, os, pathlib; " + "; ".join(code)]  # noqa: E731
    no_heif = show("sys.modules['pillow_heif'] = None", "sys.path.insert(0, '.')", "import predict",
                   "sys.exit(predict.cli(sys.argv[1:]))")
    hub = lambda home, *a: t(f["data"], work / f"o4_hub_{home}", "--epochs", "1", "--weights", "imagenet",  # noqa
                             *a)
    c = [
        ("HEIC photo: predict", p(f["heic"], "--weights", pth), {}),
        ("HEIC photo named .jpg: predict", p(f["heic_jpg"], "--weights", pth), {}),
        ("HEIC photo: predict through ONNX", p(f["heic"], "--weights", onnx_), {}),
        ("HEIC photo: predict --tta", p(f["heic"], "--weights", pth, "--tta"), {}),
        ("a folder holding a HEIC photo: predict", p(f["heic_dir"], "--weights", pth), {}),
        ("  ... --output .csv", p(f["heic_dir"], "--weights", pth, "--output", work / "heic.csv"), {}),
        ("HEIC photos in train/ and val/: train", t(f["heic_data"], work / "o4_heic", "--epochs", "1"),
         {"look": "done:"}),
        ("  ... evaluate that val/", ev("--data", f["heic_data"] / "val", "--output-dir", work / "e4_heic"),
         {"look": "top-1"}),
        ("  ... check.py", chk(f["heic_data"], "heic"), {"look": "report"}),
        ("  ... split_data.py", split(f["heic_data"] / "train", "heic"), {}),
        ("HEIC photo: the web page's reader", show("sys.path.insert(0, '.')", "import app, predict",
                                                   "page = app.Page(predict.load_classifier(sys.argv[1]), 20)",
                                                   "print('read', page.open(sys.argv[2], 'IMG.HEIC').size)") +
         [pth, str(f["heic"])], {}),
        ("HEIC photo without pillow-heif", no_heif + [str(f["heic"]), "--weights", pth, "--no-show"], {}),
        (".jfif (a browser's JPEG): predict", p(f["web"] / "a.jfif", "--weights", pth), {}),
        (".gif: predict", p(f["web"] / "b.gif", "--weights", pth), {}),
        (".ico: predict", p(f["web"] / "c.ico", "--weights", pth), {}),
        (".jxl (JPEG XL): predict", p(f["web"] / "d.jxl", "--weights", pth), {}),
        ("those four in a folder: predict", p(f["web"], "--weights", pth), {"look": "skipped"}),
        ("those four in train/red: train", t(f["web_data"], work / "o4_web", "--epochs", "1"),
         {"look": "skipped"}),
        ("  ... check.py", chk(f["web_data"], "web"), {"look": "images"}),
        ("  ... split_data.py", split(f["web_data"] / "train", "web"), {"look": "skipped"}),
        ("  ... evaluate train/ as a split", ev("--data", f["web_data"] / "train", "--output-dir", work / "e4_web"),
         {"look": "top-1"}),
        ("val/ a link to train/: train", t(f["val_is_train"], work / "o4_vit", "--epochs", "1"), {}),
        ("  ... check.py", chk(f["val_is_train"], "vit"), {}),
        ("val/red a link to train/red: train", t(f["val_red_link"], work / "o4_vrl", "--epochs", "1"), {}),
        ("  ... check.py", chk(f["val_red_link"], "vrl"), {}),
        ("  ... label_issues.py (it reads train/ only)", ["data_set/label_issues.py", str(f["val_red_link"]),
                                                          "--output-dir", str(work / "l4_vrl"), "--folds", "2",
                                                          "--epochs", "1"], {"look": "flagged"}),
    ]
    for kind in LOOKALIKE:
        c += [(f"classes that look the same ({kind}): train", t(f[f"look_{kind}"], work / f"o4_{kind}", "--epochs",
                                                                "1"), {}),
              ("  ... split_data.py", split(f[f"look_{kind}"] / "train", kind), {}),
              ("  ... check.py", chk(f[f"look_{kind}"], kind), {})]
    c += [
        ("a class name with a newline: train", t(f["newline_data"], work / "o4_nl", "--epochs", "1"),
         {"look": "training images per class"}),
        ("  ... split_data.py", split(f["newline_data"] / "train", "nl"), {"look": "red"}),
        ("  ... check.py", chk(f["newline_data"], "nl"), {"look": "report"}),
        ("  ... predict with those classes", p(img, "--weights", f["newline_pth"], "--topk", "3"), {"look": "red"}),
        ("  ... evaluate", ["evaluate.py", "--weights", str(work / "o4_nl" / "best.pth"), "--data",
                            str(f["newline_data"] / "val"), "--output-dir", str(work / "e4_nl"), "--quiet",
                            "--neighbours", "0"], {"look": "red"}),
        ("stderr closed (2>&-): train", t(f["data"], work / "o4_noerr", "--epochs", "1"),
         {"close_stderr": True, "look": "done:"}),
        ("stderr closed: predict", p(img, "--weights", pth), {"close_stderr": True}),
        ("stderr closed: evaluate", ev("--data", f["data"] / "val", "--output-dir", work / "e4_noerr"),
         {"close_stderr": True, "look": "top-1"}),
        ("stderr closed: export", ["export.py", pth, "-o", str(work / "noerr.onnx")], {"close_stderr": True}),
        ("stderr closed: a bad photo", p(work / "nope.jpg", "--weights", pth), {"close_stderr": True}),
        ("--weights imagenet: the hub cache holds another file", hub("bad"),
         {"env": {"TORCH_HOME": str(f["hub_bad"])}}),
        ("--weights imagenet: TORCH_HOME is a file", hub("file"), {"env": {"TORCH_HOME": str(f["a_file"])}}),
        ("--weights imagenet: XDG_CACHE_HOME is a file", hub("xdg"), {"env": {"TORCH_HOME": None,
                                                                             "XDG_CACHE_HOME": str(f["a_file"])}}),
        ("--weights imagenet: TORCH_HOME inside a file", hub("inside"),
         {"env": {"TORCH_HOME": str(f["a_file"] / "torch")}}),
        ("--lr find in a folder that holds a model", t(f["data"], f["model_run"], "--lr", "find"),
         {"look": "train with it"}),
        ("  ... its command, pasted", ["-c", PASTE_ADVICE, *t(f["data"], f["model_run"], "--lr", "find", "--epochs",
                                                             "1")], {"look": "the advice, run"}),
        ("--lr find --overwrite in a new folder", t(f["data"], work / "o4_find_new", "--lr", "find", "--overwrite"),
         {"look": "train with it"}),
        ("--lr find --opt sgd (clipping on)", t(f["data"], work / "o4_find_sgd", "--lr", "find", "--opt", "sgd"),
         {"look": "warning"}),
        ("--lr find: the plot over the file-size limit", t(f["data"], work / "o4_find_full", "--lr", "find",
                                                          "--cache-mem", "0"),
         {"limit_fsize": 20000, "look": "suggested"}),
        ("  ... the error line", t(f["data"], work / "o4_find_full2", "--lr", "find", "--cache-mem", "0"),
         {"limit_fsize": 20000}),
        ("200 classes of 2 photos, 2 epochs, --lr 0.001", t(f["many_small"], work / "o4_small3", "--epochs", "2",
                                                           "--lr", "0.001"), {"look": "diagnosis"}),
        ("  ... the same at --lr 0.01", t(f["many_small"], work / "o4_small2", "--epochs", "2", "--lr", "0.01"),
         {"look": "diagnosis"}),
        ("labels that carry no signal (60 noise pictures a class), 2 epochs",
         t(f["noise_labels"], work / "o4_noise", "--epochs", "2"), {"look": "diagnosis"}),
        ("  ... --lr auto --budget 30s", t(f["noise_labels"], work / "o4_auto", "--lr", "auto", "--budget", "30s"),
         {"look": "diagnosis"}),
        ("a loss that explodes at once (--lr 10, Adam)", t(f["data"], work / "o4_boom", "--epochs", "2", "--lr", "10",
                                                           "--recipe", "tutorial"), {"look": "diagnosis"}),
        ("  ... its folder", show("print(sorted(os.listdir(sys.argv[1])))") + [str(work / "o4_boom")], {}),
    ]
    c += [(f"the advice after resuming {name}", ["-c", OLD_ADVICE, str(f[f"old_{name}"]), str(f["data"])], {})
          for name in sorted(k[4:] for k in f if k.startswith("old_format"))]
    c += [("the web page's card: hostile data and file names", show(
        "sys.path.insert(0, '.')", "import app, predict", "card = app.Page(predict.load_classifier(sys.argv[1]), "
        "20).card()", "print('raw markup left:', [s for s in ('`', '<img', '<b>', '$x$', '*a*') if s in card])") +
        [str(f["hostile_card"])], {})]
    return c


def vanish(image: Path, out: Path):
    """Delete ``image`` once the first epoch's checkpoint exists."""
    def act(proc):
        deadline = time.monotonic() + TIMEOUT_S
        while not (out / "last.pth").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        image.unlink(missing_ok=True)
    return act


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="run only the cases whose command starts with this script name")
    p.add_argument("--first", type=int, default=1, help="start at this case number (the table's #)")
    p.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds before a case counts as a hang")
    p.add_argument("--prepare", metavar="DIR", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.prepare:  # the child that makes the files, so that the driver never holds torch
        sys.stdout = open(os.devnull, "w")  # the set-up's own training logs
        files = prepare(Path(args.prepare))
        (Path(args.prepare) / "files.json").write_text(json.dumps({k: v and str(v) for k, v in files.items()}))
        return 0
    work = Path(tempfile.mkdtemp(prefix="alexnet-inputs-"))
    shutil.rmtree("/dev/shm/alexnet-split-test", ignore_errors=True)
    small = Path("/tmp/alexnet-small-disk")
    if os.path.ismount(small):
        shutil.rmtree(small / "run", ignore_errors=True)
    try:
        subprocess.run([sys.executable, __file__, "--prepare", str(work)], check=True)
        files = {k: v and Path(v) for k, v in json.loads((work / "files.json").read_text()).items()}
        print("| # | input | command | exit | first line | s | peak MiB |\n| --- | --- | --- | --- | --- | --- | --- |")
        for n, (what, argv, opts) in enumerate(cases(files, work), 1):
            if (args.only and not argv[0].startswith(args.only)) or n < args.first:
                continue
            r = run(argv, ROOT, timeout=args.timeout, **opts)
            shown = " ".join(a.replace(str(work), "$W") for a in argv)
            line = r["line"].replace(str(work), "$W").replace("|", "\\|")
            print(f"| {n} | {what} | `{shown}` | {r['code']} | {line[:220]} | {r['s']:.1f} | {r['mib']:.0f} |",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

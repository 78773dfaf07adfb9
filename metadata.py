"""The fields a model file carries beside its weights, checked alike in a checkpoint and in
an ONNX export's metadata: the class names, the evaluation geometry, mean/std, the score
and epoch, the precision it was trained at, the calibration temperature, the "unknown" threshold. A damaged or crafted value is one line naming
the file and the field, never a traceback or a confident wrong answer later.

Standard library only: predict.py's ONNX path checks its metadata without importing torch.
"""
import math

from errors import CheckpointError

MIN_IMG_SIZE, MAX_IMG_SIZE = 63, 1024  # AlexNet's smallest input; a batch of 32 at 1024 px needs ~10 GiB to train
MAX_CLASSES = 100_000
PRECISIONS = ("fp32", "bf16", "fp16")  # what a run trains at; inference is always fp32
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0  # calibration (stats.fit_temperature keeps T in this range)


def check_fields(info: dict, path: str) -> None:
    """``num_classes`` and whichever of the other fields ``info`` has."""
    def need(ok: bool, name: str, problem: str) -> None:
        if not ok:
            raise CheckpointError(f"{path}: field {name!r} {problem}")

    n = info.get("num_classes")
    need(_is_int(n) and 1 <= n <= MAX_CLASSES, "num_classes", f"is {n!r}; must be a whole number in 1..{MAX_CLASSES}")
    if info.get("classes") is not None:
        names = info["classes"]
        need(isinstance(names, list) and all(isinstance(c, str) for c in names), "classes", "is not a list of names")
        need(len(names) == n, "classes", f"lists {len(names)} names for {n} outputs")
        need(len(set(names)) == n, "classes", "names a class twice")
    if "eval" in info:
        ev = info["eval"]
        need(isinstance(ev, dict) and _is_int(ev.get("size")) and _is_int(ev.get("resize")), "eval",
             "must be {\"size\": int, \"resize\": int}")
        need(MIN_IMG_SIZE <= ev["size"] <= MAX_IMG_SIZE, "eval.size",
             f"is {ev['size']}; must be in {MIN_IMG_SIZE}..{MAX_IMG_SIZE}")
        need(ev["resize"] == 0 or ev["size"] <= ev["resize"] <= 4096, "eval.resize",
             f"is {ev['resize']}; must be 0 or in {ev['size']}..4096")
    for key in ("mean", "std"):
        if key in info:
            v = info[key]
            need(isinstance(v, (list, tuple)) and len(v) == 3 and
                 all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v),
                 key, "must be three finite numbers (R, G, B)")
            need(key == "mean" or all(x > 0 for x in v), key, "must be three positive numbers")
    for key in ("best_acc", "top1_fp32", "top1_int8"):  # the last two: export.py --int8's measurement
        if info.get(key) is not None:
            acc = info[key]
            need(isinstance(acc, (int, float)) and not isinstance(acc, bool) and 0 <= acc <= 1, key,
                 "must be a number in [0, 1]")
    if info.get("epoch") is not None:
        need(_is_int(info["epoch"]) and info["epoch"] >= 0, "epoch", "must be a whole number >= 0")
    for key in ("config", "plan"):
        if info.get(key) is not None:
            need(isinstance(info[key], dict), key, "must be a dict")
    if "temperature" in info:
        t = info["temperature"]
        need(isinstance(t, (int, float)) and not isinstance(t, bool) and MIN_TEMPERATURE <= t <= MAX_TEMPERATURE,
             "temperature", f"is {t!r}; must be a number in {MIN_TEMPERATURE}..{MAX_TEMPERATURE}")
    if info.get("min_confidence") is not None:
        v = info["min_confidence"]
        need(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1, "min_confidence",
             f"is {v!r}; must be a number in (0, 1)")
    if info.get("precision") is not None:
        need(info["precision"] in PRECISIONS, "precision", f"is {info['precision']!r}; known: {', '.join(PRECISIONS)}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)

"""Where a command runs: the device, the precision, the place under torchrun, and what is
shared by every command that runs a model: batched inference, progress bars, memory budgets.

    from alexnet.machine import pick_device, pick_precision, setup_machine
    machine = setup_machine("auto", "auto")      # cuda, then mps, then cpu; bf16 where it is fast
    with machine.autocast():
        ...

train.py trains with it; evaluate.py, predict.py and bench.py use it without importing train.py.
Distributed mode is read in one place (``dist_info``), the precision is decided from what the
hardware reports (``pick_precision``, docs/failure-modes.md "Precision").
"""
import atexit
import gc
import os
import sys
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from alexnet import transforms
from alexnet.errors import ArgumentError
from model import probabilities

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Machine:
    """Where the run executes: device, precision, and its place under torchrun."""
    device: torch.device
    precision: str
    rank: int = 0
    world: int = 1
    quiet: bool = False  # no progress bars
    owns_process_group: bool = False  # setup_machine created it, so teardown destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        dtype = AMP_DTYPES.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def log(self, message: str) -> None:
        if self.is_main:
            print(message, flush=True)


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank): the one place the distributed mode is read. torchrun
    sets these variables; a plain run has none."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def available_devices() -> list[str]:
    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        found.append("mps")
    return found


EVAL_BATCH = {"cpu": 32, "gpu": 256}  # inference batch: 32 is a CPU's fastest here (bench.py); a GPU takes more


def eval_batch_size(device: torch.device) -> int:
    """The batch of validation and evaluate.py when none is given."""
    return EVAL_BATCH["cpu" if device.type == "cpu" else "gpu"]


def pick_device(name: str, local_rank: int = 0, option: str = "--device") -> torch.device:
    """auto: CUDA, then Apple MPS, then the CPU; a named device that is not here is one line."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    here = ", ".join(available_devices())
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ArgumentError(f"{option} {name}: not a device name; this machine has: {here}")
    if device.type == "cuda" and (device.index or local_rank) >= torch.cuda.device_count():
        raise ArgumentError(f"{option} {name}: no such CUDA device here; this machine has: {here}")
    if device.type == "mps" and "mps" not in here:
        raise ArgumentError(f"{option} {name}: Apple MPS is not available here; this machine has: {here}")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)  # torchrun: one GPU per process
    return device


def cpu_bf16_is_fast() -> bool:
    """Whether bf16 training beats fp32 on this CPU, from what torch reports about it, never
    from a timing (timings raced): AMX, and AMD's AVX512-BF16, but not Intel's AVX512-BF16
    without AMX (measured: docs/failure-modes.md, "Precision")."""
    caps = cpu_capabilities()
    if caps.get("amx_bf16"):
        return True
    return bool(caps.get("avx512_bf16")) and cpu_vendor() == "AuthenticAMD"


def cpu_has_bf16() -> bool:
    """bf16 matrix instructions (AVX512-BF16 or AMX), fast or not."""
    caps = cpu_capabilities()
    return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))


def cpu_capabilities() -> dict:
    """torch's own report of the CPU's instruction sets (torch 2.7 on); older torch: the
    flags of /proc/cpuinfo (x86 Linux), else nothing."""
    if hasattr(torch.cpu, "get_capabilities"):
        return torch.cpu.get_capabilities()
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return {}
    return {flag: True for flag in flags}


def cpu_summary() -> str:
    """The CPU's model and the instructions that make int8 and bf16 fast, for every bench table:
    'AMD EPYC; int8: avx512_vnni, avx_vnni; bf16: avx512_bf16; no AMX'."""
    caps = cpu_capabilities()
    name = caps.get("cpu_name") or cpuinfo("model name") or "unknown CPU"
    int8 = [f for f in ("amx_int8", "avx512_vnni", "avx_vnni", "avx_vnni_int8") if caps.get(f)]
    bf16 = [f for f in ("amx_bf16", "avx512_bf16") if caps.get(f)]
    return (f"{name}; int8: {', '.join(int8) or 'no VNNI/AMX'}; bf16: {', '.join(bf16) or 'none'}"
            f"{'' if caps.get('amx_tile') else '; no AMX'}; {os.cpu_count()} logical CPUs")


def cpuinfo(key: str) -> str:
    """A field of /proc/cpuinfo ("model name"; "vendor_id": GenuineIntel, AuthenticAMD), or ''
    where the OS does not say."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(key)), "")
    except OSError:
        return ""


def cpu_vendor() -> str:
    return cpuinfo("vendor_id")


def pick_precision(name: str, device: torch.device) -> str:
    """auto: bf16 where the hardware runs it fast, fp16 + GradScaler on older GPUs, else fp32."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_bf16_is_fast():
        return "bf16"
    return "fp32"


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's <malloc.h> parameter numbers


def setup_machine(device_name: str, precision_name: str, quiet: bool = False, resume: dict | None = None) -> Machine:
    """The device (one GPU per process under torchrun), the training precision (a resumed
    run's own, on the same kind of device, unless one is named), and the process group."""
    rank, world, local_rank = dist_info()
    device = pick_device(device_name, local_rank)
    precision = pick_precision(precision_name, device)
    if precision_name == "auto" and resume and resume["device_type"] == device.type and resume["precision"]:
        precision = resume["precision"]  # a resumed run trains on as it began, so it ends as an uninterrupted one
    owns_group = world > 1 and not torch.distributed.is_initialized()
    if owns_group:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    keep_freed_memory()
    return Machine(device, precision, rank, world, quiet, owns_group)


def keep_freed_memory() -> None:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.
    By default it maps blocks over 32 MB (the first FC layer's 38 MB weight gradient) freshly on
    each allocation and unmaps them on free, and trims the heap's top: every training step then
    page-faults that memory back in (measured: docs/performance.md). A no-op where the C
    library has no mallopt (macOS, Windows)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):  # TypeError: Windows has no process-wide handle
        return
    mallopt(M_MMAP_MAX, 0)  # never serve an allocation with its own mmap
    mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # never give the heap's free top back


def teardown(machine: Machine) -> None:
    if machine.owns_process_group and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
        # DistributedDataParallel sits in a reference cycle that keeps the group alive until the
        # garbage collector runs; if that is the interpreter's shutdown, gloo's threads can abort
        # the process (SIGABRT, pytorch#179291). So collect once more while Python is whole.
        atexit.register(gc.collect)


def device_cache_budget(gib: float, device: torch.device) -> int:
    """Bytes of device memory for the resident images: --device-cache-mem, or a quarter of what is free."""
    if gib >= 0:
        return int(gib * 2**30)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 4
    return cache_budget(-1)


def cache_budget(cache_mem_gib: float) -> int:
    """Bytes of RAM for decoded images: --cache-mem, or a quarter of the machine's memory."""
    if cache_mem_gib >= 0:
        return int(cache_mem_gib * 2**30)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (AttributeError, ValueError, OSError):
        return 4 * 2**30


def broadcast(machine: Machine, value):
    """Rank 0's value on every rank: all ranks must follow one plan."""
    if machine.world > 1:
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        value = box[0]
    return value


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def predict_batches(model: nn.Module, loader, machine: Machine, mean, std, desc: str = "validate",
                    temperature: float = 1.0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(probabilities on the CPU, targets) per batch; the softmax of ten-crop batches is
    averaged over the views. Shared by validation and evaluate.py."""
    model.eval()
    for images, targets in progress(loader, machine, desc):
        views = images.shape[1] if images.dim() == 5 else 1
        x = transforms.normalize(images.to(machine.device, non_blocking=True), mean, std)
        with machine.autocast():
            yield probabilities(model, x, views, temperature).cpu(), targets


def progress(iterable, machine: Machine, desc: str, total: int | None = None):
    """tqdm bars on a terminal only (disable=None), on rank 0, unless --quiet."""
    if machine.quiet or not machine.is_main:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, file=sys.stdout, disable=None)

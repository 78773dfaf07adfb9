"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node=2`` (gloo, CPU).

    torchrun --standalone --nproc_per_node=2 tests/torchrun_checks.py DATA SAME_IMAGE_DATA OUT RESULT_PREFIX

Each rank writes what it saw to RESULT_PREFIX-<rank>.json:
1. on SAME_IMAGE_DATA (every training image the same photo), a checksum of its first
   batch after preemption.start_epoch and of a dropout mask (they must differ between ranks:
   each draws its own augmentation), and of its initial weights (they must not);
2. the exit code of train.py's own cli() on DATA, with a batch larger than each rank's
   share of the images and --lr auto (the range test's losses averaged over the ranks, so
   both stop at the same step), and whether a process group is left afterwards (it must not be).
"""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from alexnet import preemption, settings, trainer  # noqa: E402
import train  # noqa: E402
from alexnet.machine import Machine, dist_info  # noqa: E402


def checksum(t: torch.Tensor) -> float:
    return float((t.double().flatten() * torch.arange(1, t.numel() + 1, dtype=torch.float64)).sum())


def main(data_dir: str, same_dir: str, out: str, result: str) -> int:
    rank, world, _ = dist_info()
    cfg, _ = settings.resolve_config(train.get_args_parser().parse_args(
        ["--data", same_dir, "--output-dir", f"{out}-same-{rank}", "--img-size", "64", "--batch-size", "4",
         "--workers", "0", "--device", "cpu", "--quiet", "--cache-mem", "0"]))
    machine = Machine(torch.device("cpu"), "fp32", rank, world, quiet=True)
    loaders = train.load_data(cfg, machine)  # the DistributedSampler needs no process group
    preemption.start_epoch(cfg, loaders, 0, rank, 64)
    images, _ = next(iter(loaders.train))
    report = {"first_batch": checksum(images), "dropout_mask": checksum(torch.nn.functional.dropout(torch.ones(64), 0.5)),
              "initial_weights": checksum(trainer.init_model(cfg, len(loaders.classes), None, machine).features[0].weight)}
    report["code"] = train.cli(["--data", data_dir, "--output-dir", out, "--img-size", "64", "--epochs", "2",
                                "--batch-size", "16", "--lr", "auto", "--quiet", "--workers", "0", "--precision", "fp32",
                                "--device", "cpu"])
    report["initialized_after_run"] = dist.is_initialized()
    Path(f"{result}-{rank}.json").write_text(json.dumps(report))
    return report["code"]


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))

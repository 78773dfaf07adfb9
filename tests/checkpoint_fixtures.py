"""Checkpoints of every format that shipped (alexnet.checkpoint.CHECKPOINT_FORMAT), as small fixtures:
each is a real last.pth written by that commit's train.py, with its large tensors (the
weights and the optimizer's moments) replaced by their shape, so it takes kilobytes.
``inflate`` gives such tensors back (seeded random values of the recorded shape and dtype).

Made with, for each COMMIT in 694ef3c 50b6488 30913d2 23402ed (the colour folder of
tests/conftest.py with 4 train and 2 val images per class, in /tmp/fx/data):

    git worktree add /tmp/fx/COMMIT COMMIT && cd /tmp/fx/COMMIT
    python train.py --data /tmp/fx/data --output-dir /tmp/fx/out --img-size 64 --epochs 1 \\
        --batch-size 4 --workers 0 --quiet --sched plateau [--ema 0.9 from 30913d2 on]
    python /work/main/tests/checkpoint_fixtures.py /tmp/fx/out/last.pth \\
        tests/fixtures/checkpoints/format1-COMMIT.pth      # format2- for 23402ed

and format3-e51663e-paper.pth, the last one-column `--arch paper` net (#43 made that arch two-column),
from the colour folder as made (10 train, 4 val images per class): the same train.py command with
--ema 0.9 --arch paper, at e51663e.
"""
import sys
from pathlib import Path

import torch

FOLDER = Path(__file__).parent / "fixtures" / "checkpoints"
KEEP_BYTES = 8192  # the RNG state (5 KB) and the optimizer's step counters stay as they were


def shrink(value):
    if isinstance(value, torch.Tensor) and value.numel() * value.element_size() > KEEP_BYTES:
        return {"shrunk_tensor": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, dict):
        return {k: shrink(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(shrink(v) for v in value)
    return value


def inflate(value, gen: torch.Generator | None = None, centred: bool = True):
    """Seeded values in place of each shrunk tensor: weights centred on zero (so that the paper's
    wide net does not blow up), the optimizer's moments in [0, 0.02] (its second moments must not
    be negative)."""
    gen = gen or torch.Generator().manual_seed(0)
    if isinstance(value, dict) and "shrunk_tensor" in value:
        values = torch.rand(value["shrunk_tensor"], generator=gen) - (0.5 if centred else 0.0)
        return (values * 0.02).to(getattr(torch, value["dtype"]))
    if isinstance(value, dict):
        return {k: inflate(v, gen, centred and k != "optimizer") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(inflate(v, gen, centred) for v in value)
    return value


def fixtures() -> list[Path]:
    return sorted(FOLDER.glob("format*.pth"))


if __name__ == "__main__":
    torch.save(shrink(torch.load(sys.argv[1], map_location="cpu", weights_only=True)), sys.argv[2])

"""TensorBoard for ``train.py --tensorboard``: watch a run's curves live, in a browser.

    pip install -r requirements-cluster.txt
    python train.py --tensorboard                      # logs into runs/tensorboard/
    tensorboard --logdir runs/tensorboard              # then open http://localhost:6006

Rank 0 writes, every epoch, the same numbers as metrics.csv (one scalar per column, at the
epoch number), the learning rate every LR_EVERY steps (at the global step), the validation
split's confusion matrix every CONFUSION_EVERY epochs and at the last one, and at the end
the settings as hparams with the best top-1. A resumed run appends to the same folder.
"""
import dataclasses
from importlib.util import find_spec
from pathlib import Path

from alexnet.errors import UserError

INSTALL = "pip install -r requirements-cluster.txt"
FOLDER = "tensorboard"
LR_EVERY = 10  # steps between learning-rate points
CONFUSION_EVERY = 5  # epochs between confusion matrices


def require() -> None:
    """One line naming the install command when tensorboard is missing, before any work."""
    if find_spec("tensorboard") is None:
        raise UserError(f"--tensorboard: the tensorboard package is not installed: {INSTALL}")


class Board:
    """One SummaryWriter into OUTPUT_DIR/tensorboard/."""

    def __init__(self, output_dir: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(output_dir) / FOLDER))

    def learning_rate(self, step: int, lr: float) -> None:
        if step % LR_EVERY == 0:
            self.writer.add_scalar("lr_step", lr, step)

    def epoch(self, row: dict) -> None:
        """metrics.csv's row: every number but the epoch itself."""
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def confusion(self, epoch: int, last: bool, counts, classes: list[str]) -> None:
        if epoch % CONFUSION_EVERY and not last:
            return
        from alexnet.figures import confusion_figure  # evaluate.py's confusion_matrix.png, the same drawing

        fig = confusion_figure(counts, classes, f"validation, epoch {epoch}")
        self.writer.add_figure("confusion_matrix", fig, epoch)
        self.writer.flush()

    def close(self, cfg, best_acc: float, best_epoch: int) -> None:
        """The settings as hparams (numbers, booleans and text only, as TensorBoard takes)."""
        settings = {k: (v if isinstance(v, (int, float, bool, str)) else str(v))
                    for k, v in dataclasses.asdict(cfg).items() if v is not None}
        self.writer.add_hparams(settings, {"hparam/best_val_top1": best_acc, "hparam/best_epoch": best_epoch},
                                run_name=".")
        self.writer.close()

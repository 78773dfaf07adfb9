"""How the training images fall into classes: the imbalance train.py warns about, what
--balance auto resolves to, the line that describes the classes, and the sampler that draws
each class equally often (--balance sampler)."""
from typing import Sequence

import torch

from alexnet import folders


IMBALANCE_WARNING = 3.0  # largest class / smallest class from which train.py warns and --balance auto acts
AUTO_BALANCE = "loss"  # what --balance auto does then (why: docs/results.md, "Your own photos")


def imbalance(counts: list[int]) -> float:
    """The largest class's images over the smallest's (an empty class counts as one)."""
    return max(counts) / max(min(counts), 1)


def balance_mode(setting: str, counts: list[int]) -> str:
    """The --balance a run trains with: as given, or for auto, AUTO_BALANCE when the classes
    are IMBALANCE_WARNING:1 or more apart, else none."""
    if setting != "auto":
        return setting
    return AUTO_BALANCE if imbalance(counts) >= IMBALANCE_WARNING else "none"


class BalancedSampler(torch.utils.data.Sampler):
    """--balance sampler: torch's WeightedRandomSampler (with replacement) over some of the
    images, ``indices`` (this rank's share under torchrun), as many draws as images."""

    def __init__(self, indices: Sequence[int], weights: Sequence[float], generator: torch.Generator):
        self.indices = list(indices)
        self.inner = torch.utils.data.WeightedRandomSampler(weights, len(self.indices), replacement=True,
                                                            generator=generator)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return (self.indices[i] for i in self.inner)


def describe_classes(classes: list[str], counts: list[int], balance: str) -> list[str]:
    """The training images per class, in one line (compact for many classes), and a warning
    when the largest class has IMBALANCE_WARNING times the images of the smallest, saying what
    --balance (as resolved) does about it."""
    if len(classes) <= 12:
        lines = ["training images per class: "
                 + ", ".join(f"{folders.printable(c)} {n}" for c, n in zip(classes, counts))]
    else:
        ordered = sorted(counts)
        lines = [f"training images per class: {len(classes)} classes, {ordered[0]}-{ordered[-1]} each "
                 f"(median {ordered[len(ordered) // 2]})"]
    most, least = max(range(len(counts)), key=counts.__getitem__), min(range(len(counts)), key=counts.__getitem__)
    ratio = imbalance(counts)
    if ratio >= IMBALANCE_WARNING:
        remedy = "--balance sampler or loss weighs the classes alike" if balance == "none" else \
            f"weighing the classes alike (--balance {balance})"
        lines.append(f"warning: class imbalance {ratio:.1f}:1 ({folders.printable(classes[most])} {counts[most]}, "
                     f"{folders.printable(classes[least])} {counts[least]} images); {remedy}")
    return lines

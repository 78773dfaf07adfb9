"""Every figure the scripts draw, on matplotlib's Agg canvas (no display, no pyplot unless a
window is asked for): training curves, the confusion matrix (also TensorBoard's), the
reliability diagram, mistakes, conv1 filters, nearest neighbours, the unknown-image scores,
and predict.py's images with their probabilities and Grad-CAM."""
from __future__ import annotations

import math
import os
import sys
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from alexnet import folders, images, outputs

if TYPE_CHECKING:  # predict.py's figure needs neither torch nor the settings
    import torch

    from alexnet.datasets import CachedImageFolder
    from alexnet.settings import Config

MAX_SHOWN = 16  # images in predict.py's figure; all of them are printed
# Fonts with Chinese (and Japanese, Korean) glyphs, which matplotlib's DejaVu Sans lacks, most
# common first: Linux (Debian's fonts-noto-cjk, Adobe's Source Han, WenQuanYi), Windows, macOS.
# The first one installed is put after DejaVu Sans, and matplotlib falls back to it glyph by glyph.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "Source Han Sans", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "Microsoft YaHei", "SimHei", "PingFang SC", "Hiragino Sans GB", "Heiti SC",
             "Arial Unicode MS")
CJK_FILES = ("notosanscjk", "sourcehansans", "wqy-", "msyh", "simhei", "pingfang", "hiragino", "stheiti")
NO_FONT_HINT = ("note: no font here draws some characters of these labels (Chinese?), so the figures show boxes for "
                "them; install one, e.g. sudo apt-get install fonts-noto-cjk (Debian, Ubuntu), and run again")
_fonts = {"ready": False, "hinted": False}
NO_DISPLAY = "(no display found: pass --save fig.png to write the figure, --no-show to skip it)"


def setup_fonts() -> None:
    """Once per process, before the first figure: a CJK font installed here becomes the
    fallback of every figure's text. Fonts installed after matplotlib built its font cache
    are added from the system's font folders."""
    if _fonts["ready"]:
        return
    _fonts["ready"] = True
    from matplotlib import font_manager, rcParams

    known = {f.name for f in font_manager.fontManager.ttflist}
    if not known & set(CJK_FONTS):
        for path in font_manager.findSystemFonts():
            if os.path.basename(path).lower().startswith(CJK_FILES):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue
        known = {f.name for f in font_manager.fontManager.ttflist}
    cjk = next((name for name in CJK_FONTS if name in known), None)
    if cjk:
        rcParams["font.family"] = ["DejaVu Sans", cjk]
    # one warning per missing character and figure would bury the output: hint_missing_glyphs says it once
    warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)


def hint_missing_glyphs(fig) -> None:
    """One line, once, where the figure's text holds characters no font of its families has
    (matplotlib's own per-character warnings are silenced in ``setup_fonts``)."""
    from matplotlib import font_manager, rcParams
    from matplotlib.text import Text

    chars = {c for text in fig.findobj(Text) for c in text.get_text() if not c.isascii() and not c.isspace()}
    if not chars or _fonts["hinted"]:
        return
    covered = set()
    for family in rcParams["font.family"]:
        covered |= charmap(font_manager.findfont(font_manager.FontProperties(family=family)))
    if any(ord(c) not in covered for c in chars):
        _fonts["hinted"] = True
        print(NO_FONT_HINT, file=sys.stderr)


@lru_cache(maxsize=None)
def charmap(path: str) -> frozenset:
    """The code points a font file has glyphs for."""
    from matplotlib import ft2font

    return frozenset(ft2font.FT2Font(path).get_charmap())


def save_with_font_hint(fig, path: str | os.PathLike, dpi: int = 100) -> None:
    """outputs.save_figure, with the one-line font hint where labels need glyphs no font here has."""
    hint_missing_glyphs(fig)
    outputs.save_figure(fig, path, dpi)


def loss_labels(cfg: Config) -> tuple[str, str]:
    """Legend labels that say how each loss was measured: the training loss includes label
    smoothing and mixing and is taken on augmented crops; validation's is plain cross-entropy."""
    extras = [f"label smoothing {cfg.label_smoothing:g}"] if cfg.label_smoothing else []
    extras += ["MixUp/CutMix soft labels"] if cfg.mixup_alpha or cfg.cutmix_alpha else []
    train = "train (augmented crops" + "".join(f", {e}" for e in extras) + ")"
    return train, "val (plain cross-entropy)"


# train.py redraws curves.png after an epoch once this many seconds passed, and when the run ends:
# drawing it (0.2-0.3 s) took longer than an epoch of a small run
REDRAW_S = 10.0


def plot_curves(cfg: Config, history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch; the Agg canvas needs no display and no pyplot."""
    fig = new_figure(10, 4)
    epochs = [h["epoch"] for h in history]
    ax1, ax2 = fig.subplots(1, 2)
    train_label, val_label = loss_labels(cfg)
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label=train_label)
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label=val_label)
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.plot(epochs, [h["train_acc"] for h in history], "o-", label="train top-1 (augmented crops)")
    ax2.plot(epochs, [h["val_top1"] for h in history], "o-", label="val top-1")
    if all("raw_val_top1" in h for h in history):
        ax2.plot(epochs, [h["raw_val_top1"] for h in history], ".--", label="val top-1, raw weights (EMA off)")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    # fixed margins that fit these labels: tight_layout measured every text first, and took more
    # than the drawing itself on every epoch (0.35 s a plot on a 2-core EPYC)
    fig.subplots_adjust(left=0.065, right=0.985, bottom=0.125, top=0.92, wspace=0.2)
    save_with_font_hint(fig, path)


def has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cam_overlay(view, heat, alpha: float = 0.45):
    """The heat-map in matplotlib's 'jet' colours blended over the view, as uint8 H x W x 3."""
    import numpy as np
    from matplotlib import colormaps

    colours = colormaps["jet"](heat)[..., :3] * 255
    return (view * (1 - alpha) + colours * alpha).round().clip(0, 255).astype(np.uint8)


def show_figure(results: list[tuple], save: str | None, show: bool) -> bool:
    """One panel per (path, class name, probability, Grad-CAM overlay or None); saved to
    ``save``, shown in a window if ``show``. False where no window could open (a DISPLAY
    whose X server is gone: matplotlib falls back to its non-interactive Agg)."""
    import matplotlib
    if not show:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends import BackendFilter, backend_registry

    setup_fonts()
    if len(results) > MAX_SHOWN:
        print(f"(the figure shows the first {MAX_SHOWN} of {len(results)} images)")
        results = results[:MAX_SHOWN]
    cols = min(4, len(results))
    rows = -(-len(results) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (path, name, p, overlay) in zip(axes.flat, results):
        if overlay is not None:
            ax.imshow(overlay)
        else:
            ax.imshow(thumbnail(path, 1024))
        ax.set_title(f"{folders.printable(name)} {p:.3f}\n{folders.printable(os.path.basename(path))}", fontsize=10)
    fig.tight_layout()
    if save:
        save_with_font_hint(fig, save)
        print(f"figure saved to {save}")
    shown = show and matplotlib.get_backend().lower() in backend_registry.list_builtin(BackendFilter.INTERACTIVE)
    if shown:
        hint_missing_glyphs(fig)
        plt.show()
    plt.close(fig)
    return shown


def new_figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas: no display, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    setup_fonts()
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def plot_confusion(confusion: torch.Tensor, names: list[str], path: Path, headline: str) -> None:
    save_with_font_hint(confusion_figure(confusion, names, headline), path)


def confusion_figure(confusion: torch.Tensor, names: list[str], headline: str):
    """Counts and row-normalised side by side, under the headline score; cell numbers and font
    sizes shrink, and the figure grows, with the class count, so 100 classes stay legible
    (also train.py --tensorboard's image)."""
    n = len(names)
    side = min(40.0, max(5.0, 0.22 * n + 2.5))
    fig = new_figure(2 * side + 1.5, side + 1)
    rows = confusion.double() / confusion.sum(1, keepdim=True).clamp_min(1)
    label_size = max(4.0, min(10.0, 300 / max(n, 1)))
    labels = [folders.printable(c) for c in names]
    for ax, values, title in zip(fig.subplots(1, 2), (confusion.double(), rows), ("images", "share of each true class")):
        image = ax.imshow(values.numpy(), cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set(title=title, xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n))
        ax.set_xticklabels(labels, rotation=90, fontsize=label_size)
        ax.set_yticklabels(labels, fontsize=label_size)
        if n <= 20:
            for (i, j), v in zip(((i, j) for i in range(n) for j in range(n)), values.flatten().tolist()):
                text = f"{v:.0f}" if title == "images" else f"{v:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=label_size,
                        color="white" if v > values.max().item() / 2 else "black")
    fig.suptitle(headline)
    fig.tight_layout()
    return fig


def plot_reliability(bins: dict, raw_ece: float | None, temperature: float, path: Path) -> None:
    """Reliability diagram: each confidence bin's accuracy against its mean confidence, with
    the image count per bin; a calibrated model's bars follow the diagonal."""
    edges = [i / len(bins["count"]) for i in range(len(bins["count"]))]
    fig = new_figure(6, 6.5)
    ax, counts = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.bar(edges, bins["accuracy"], width=1 / len(bins["count"]), align="edge", edgecolor="black",
           alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    shown = [(c, a) for c, a, n in zip(bins["confidence"], bins["accuracy"], bins["count"]) if n]
    ax.plot([c for c, _ in shown], [a for _, a in shown], "o", color="crimson", label="mean confidence")
    before = "" if raw_ece is None else f" (uncalibrated: {raw_ece:.3f})"
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title=f"ECE {bins['ece']:.3f}{before}, temperature {temperature:.2f}")
    ax.legend(loc="upper left", fontsize=8)
    counts.bar(edges, bins["count"], width=1 / len(bins["count"]), align="edge", edgecolor="black")
    counts.set(xlabel="confidence (top probability)", ylabel="images")
    fig.tight_layout()
    save_with_font_hint(fig, path)


def thumbnail(path: str, side: int = 256):
    """An image for a figure: opened as every tool opens one (images.open_image: the size
    checks, a huge JPEG read at a reduced scale), upright (EXIF), RGB, at most ``side`` px."""
    with images.open_image(path) as img:
        img.thumbnail((side * 2, side * 2))  # shrink before the conversions: a figure cell needs no more
        img = images.upright_rgb(img, path)
        img.thumbnail((side, side))
        return img


def plot_mistakes(split: CachedImageFolder, probs: torch.Tensor, targets: torch.Tensor, names: list[str], count: int,
                  path: Path) -> int:
    """The ``count`` wrong predictions with the highest loss; returns how many were shown."""
    wrong = (probs.argmax(1) != targets).nonzero().flatten()
    loss = -probs[wrong, targets[wrong]].clamp_min(1e-12).log()
    shown = wrong[loss.argsort(descending=True)][:count].tolist()
    if not shown:
        return 0
    cols = min(4, len(shown))
    fig = new_figure(3.2 * cols, 3.4 * math.ceil(len(shown) / cols))
    for n, i in enumerate(shown):
        ax = fig.add_subplot(math.ceil(len(shown) / cols), cols, n + 1)
        ax.imshow(thumbnail(split.samples[i][0]))
        p = probs[i].max().item()
        true, predicted = folders.printable(names[targets[i]]), folders.printable(names[probs[i].argmax()])
        ax.set_title(f"true {true}\npredicted {predicted} {p:.2f}", fontsize=9)
        ax.axis("off")
    fig.suptitle("most confidently wrong (highest loss first)")
    fig.tight_layout()
    save_with_font_hint(fig, path)
    return len(shown)


def filter_grid(weight: torch.Tensor, columns: int = 1) -> torch.Tensor:
    """The kernels of a C x 3 x k x k weight in one image, each scaled to the full range; with
    two columns each half fills whole rows of its own (the upper rows are column 1's)."""
    from torchvision.utils import make_grid

    per_row = int(math.ceil(math.sqrt(len(weight))))
    while columns == 2 and (len(weight) // 2) % per_row:
        per_row += 1
    return make_grid(weight.detach().float().cpu(), nrow=per_row, normalize=True, scale_each=True, padding=1,
                     pad_value=1.0)


def plot_filters(model: torch.nn.Module, path: Path) -> None:
    """The first convolution's kernels (paper figure 3); a two-column net's halves in rows of
    their own, with their mean chroma."""
    from alexnet.stats import column_chroma

    weight = model.features[0].weight.detach().float().cpu()
    columns = getattr(model, "switches", {}).get("columns", 1)
    fig = new_figure(7, 7)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(filter_grid(weight, columns).permute(1, 2, 0).numpy(), interpolation="nearest")
    title = f"conv1: {weight.shape[0]} kernels of {weight.shape[2]}x{weight.shape[3]} px, RGB"
    if columns == 2:
        first, second = column_chroma(weight)
        title += f"\ncolumn 1 (upper half) chroma {first:.2f}, column 2 (lower half) {second:.2f}"
    ax.set_title(title)
    ax.axis("off")
    save_with_font_hint(fig, path)


def plot_neighbours(queries: list[str], found: list[list[str]], path: Path) -> None:
    cols = 1 + max(map(len, found))
    fig = new_figure(1.8 * cols, 1.9 * len(queries))
    for r, (query, near) in enumerate(zip(queries, found)):
        for c, image in enumerate([query, *near]):
            ax = fig.add_subplot(len(queries), cols, r * cols + c + 1)
            ax.imshow(thumbnail(image, 160))
            ax.axis("off")
            if r == 0:
                ax.set_title("test image" if c == 0 else f"nearest {c}", fontsize=9)
    fig.suptitle("training images nearest in the last hidden layer")
    fig.tight_layout()
    save_with_font_hint(fig, path)


def plot_ood(known: torch.Tensor, unknown: torch.Tensor, report: dict, path: Path) -> None:
    """Histograms of the top probability, the split's and the out-of-class images', and the threshold."""
    fig = new_figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    bins = [i / 40 for i in range(41)]
    ax.hist(known.tolist(), bins=bins, alpha=0.6, density=True, label=f"{report['split']} split ({len(known)})")
    ax.hist(unknown.tolist(), bins=bins, alpha=0.6, density=True, label=f"out of class ({len(unknown)})")
    ax.axvline(report["threshold"], color="black", linestyle="--",
               label=f"threshold {report['threshold']:.3f} ({report['false_rejection_target']:.0%} of val/ rejected)")
    ax.set(xlabel="top probability", ylabel="density", title=f"AUROC {report['auroc']:.3f}")
    ax.legend(fontsize=8)
    save_with_font_hint(fig, path)

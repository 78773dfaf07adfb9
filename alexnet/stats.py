"""How sure a score measured on a few hundred images is: intervals, paired comparisons and
calibration, for evaluate.py.

    wilson(231, 309)                        # 95% interval of a proportion (top-1)
    bootstrap(statistic, n)                 # seeded percentile interval of any per-image statistic
    mcnemar(b, c)                           # exact two-sided p of a paired comparison
    expected_calibration_error(probs, targets)
    fit_temperature(probs, targets)         # one scalar: softmax(log p / T) matches the accuracy
    auroc(known, unknown)                   # how well a score tells two sets apart (out-of-class images)
    rejection_threshold(scores, 0.05)       # the score below which 5% of the known images fall
    chroma(model.features[0].weight)        # how colour-specific each first-layer kernel is (paper figure 3)

The bootstrap and the temperature use torch; Wilson and McNemar are scipy's binomtest, the
AUROC scikit-learn's (both come with cleanlab, in requirements.txt), imported where they are
used so that train.py does not pay for them.
"""
import math
from typing import Callable

import torch

BOOTSTRAP_SAMPLES = 2000
ECE_BINS = 15


def confusion_matrix(targets: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[true class, predicted class]."""
    return torch.bincount(targets * num_classes + predicted, minlength=num_classes ** 2).view(num_classes, num_classes)


def wilson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``successes / n`` (Wilson 1927; scipy's binomtest): unlike the
    normal approximation it stays inside [0, 1] and covers near 0 and 1."""
    from scipy.stats import binomtest

    if n == 0:
        return 0.0, 1.0
    interval = binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return max(0.0, interval.low), min(1.0, interval.high)


def bootstrap(statistic: Callable[[torch.Tensor], torch.Tensor], n: int, samples: int = BOOTSTRAP_SAMPLES,
              seed: int = 0, level: float = 0.95) -> torch.Tensor:
    """Percentile interval (2 x ...) of ``statistic`` over images resampled with replacement.
    ``statistic`` maps a B x n tensor of image indices to B values (or B x K for K statistics
    at once); the draws are seeded, so a report is reproducible."""
    gen = torch.Generator().manual_seed(seed)
    chunk = max(1, min(200, 4_000_000 // max(n, 1)))  # resamples drawn at once: a few tens of MB of indices
    values = torch.cat([statistic(torch.randint(n, (min(chunk, samples - s), n), generator=gen))
                        for s in range(0, samples, chunk)]).double()
    alpha = (1 - level) / 2  # NaN: a resample where the statistic is undefined (no image of a class)
    return torch.nanquantile(values, torch.tensor([alpha, 1 - alpha], dtype=torch.float64), dim=0)


def resampled_counts(targets: torch.Tensor, predicted: torch.Tensor, num_classes: int,
                 index: torch.Tensor) -> torch.Tensor:
    """B x 3 x C: per class, the true positives, the support and the predictions of each of
    the B resamples in ``index`` (B x n image indices); memory B x C, not B x C x C."""
    b = index.shape[0]
    offset = torch.arange(b)[:, None] * num_classes
    t, p = targets[index] + offset, predicted[index] + offset
    hit = (targets[index] == predicted[index]).double()

    def count(cells, weights=None):
        return torch.bincount(cells.flatten(), weights, minlength=b * num_classes).view(b, num_classes).double()

    return torch.stack([count(t, hit.flatten()), count(t), count(p)], 1)


def precision_recall_f1(tp: torch.Tensor, support: torch.Tensor,
                        predicted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class, from its true positives, images and predictions (any leading shape): a
    class nothing was predicted as has precision 0, one without images recall 0, and F1 is 0
    where both are, never a division by zero. evaluate.py's table and the bootstrap share it,
    so an interval is always of the figure it stands beside."""
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), 0.0)
    recall = torch.where(support > 0, tp / support.clamp_min(1), 0.0)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0.0)
    return precision, recall, f1


def macro_f1_and_recall(counts: torch.Tensor) -> torch.Tensor:
    """B x (1 + C): macro-F1 over the classes that occur, then each class's recall (NaN where
    a resample holds none of that class), from ``resampled_counts``."""
    tp, support, predicted = counts.unbind(1)
    _, recall, f1 = precision_recall_f1(tp, support, predicted)
    occurs = ((support > 0) | (predicted > 0)).double()
    macro = (f1 * occurs).sum(1) / occurs.sum(1).clamp_min(1)
    return torch.cat([macro[:, None], torch.where(support > 0, recall, torch.nan)], 1)


def mcnemar(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: of the images exactly one model got right, ``only_a``
    went to A and ``only_b`` to B; under "no difference" each is a fair coin flip (scipy's
    exact binomial test)."""
    from scipy.stats import binomtest

    n = only_a + only_b
    return 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> dict:
    """ECE (Guo et al. 2017): images binned by their top probability into ``bins`` equal
    widths; the mean gap between each bin's accuracy and confidence, weighted by its size.
    Also each bin's count, accuracy and confidence, for the reliability diagram."""
    confidence, predicted = probs.max(1)
    correct = (predicted == targets).double()
    which = (confidence.double() * bins).long().clamp(max=bins - 1)
    count = torch.bincount(which, minlength=bins).double()
    accuracy = torch.bincount(which, correct, minlength=bins) / count.clamp_min(1)
    mean_conf = torch.bincount(which, confidence.double(), minlength=bins) / count.clamp_min(1)
    ece = ((accuracy - mean_conf).abs() * count).sum().item() / max(len(targets), 1)
    return {"ece": ece, "count": count.long().tolist(), "accuracy": accuracy.tolist(), "confidence": mean_conf.tolist()}


def fit_temperature(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """The T > 0 that minimises the negative log-likelihood of ``calibrated(probs, T)``
    (temperature scaling, Guo et al. 2017): one scalar, fitted by L-BFGS on log T."""
    log_p = probs.double().clamp_min(1e-12).log()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(log_p / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def auroc(known: torch.Tensor, unknown: torch.Tensor) -> float:
    """The chance that a known image scores above an unknown one (ties count half): the area
    under the ROC curve of telling them apart by the score (scikit-learn's)."""
    from sklearn.metrics import roc_auc_score

    scores = torch.cat([known, unknown]).double().numpy()
    return float(roc_auc_score([1] * len(known) + [0] * len(unknown), scores))


def rejection_threshold(scores: torch.Tensor, false_rejection: float) -> float:
    """The largest threshold that rejects (score < threshold) at most ``false_rejection`` of
    ``scores``: the known images' top probabilities."""
    ordered = scores.double().sort().values
    allowed = math.floor(false_rejection * len(ordered))  # images that may fall below it
    return float(ordered[allowed]) if allowed < len(ordered) else float(ordered[-1])


def chroma(kernels: torch.Tensor) -> torch.Tensor:
    """How colour-specific each kernel of a C x 3 x k x k weight is: the share of its energy
    off the grey axis, the part that differs between its R, G and B planes (0: the same
    pattern in every channel, colour-agnostic; 2/3: a single channel, or random noise; up to
    1: opposite colours, red against green, with no brightness pattern). The paper's figure 3
    shows the two GPUs' first-layer kernels, one group largely colour-agnostic, the other
    colour-specific: this is that judgement as a number."""
    kernels = kernels.detach().double()
    grey = kernels.mean(dim=1, keepdim=True)
    return ((kernels - grey) ** 2).sum(dim=(1, 2, 3)) / (kernels ** 2).sum(dim=(1, 2, 3)).clamp_min(1e-12)


def column_chroma(kernels: torch.Tensor) -> tuple[float, float]:
    """The mean chroma of the first and the second half of the kernels: in a two-column net
    (model.py's ``columns=2``) the kernels each column's convolution 2 sees."""
    values = chroma(kernels)
    half = len(values) // 2
    return values[:half].mean().item(), values[half:].mean().item()

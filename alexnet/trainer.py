"""What learns, built once for a run: the model (fresh, from --weights, or resumed), its
DDP / compiled wrapper, the optimizer, the GradScaler, the loss, the plateau schedule, the
weight average (--ema), the lighting (--lighting) and batch mixing (MixUp / CutMix).
The training step that uses them is train.py's ``train_step``."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from alexnet import transforms
from alexnet.checkpoint import load_weights
from alexnet.errors import CheckpointError
from alexnet.loaders import Loaders
from alexnet.machine import Machine
from model import AlexNet, switches_of

if TYPE_CHECKING:  # settings imports budget, which builds on this module
    from alexnet.settings import Config


@dataclass
class Trainer:
    """The objects that learn, built once by ``build_trainer``."""
    model: AlexNet  # the weights being trained; state_dict keys as the tutorial's
    step_model: nn.Module  # what a training step calls: the model, or its DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None
    ema: nn.Module | None  # torch's AveragedModel with --ema
    lighting_basis: list | None  # (eigenvalues, eigenvectors) of the training pixels, with --lighting
    lighting: transforms.Lighting | None  # the PCA lighting drawn from that basis, with --lighting
    mix: Callable | None  # MixUp / CutMix

    @property
    def validated_model(self) -> nn.Module:
        """What validation, best.pth and predict.py use: the weight average with --ema."""
        return self.model if self.ema is None else self.ema.module

    def load_state(self, resume: dict) -> None:
        """Go on from a checkpoint: its optimizer, GradScaler, weight average and plateau
        schedule (its weights were loaded into the model by init_model)."""
        self.optimizer.load_state_dict(resume["optimizer"])
        self.scaler.load_state_dict(resume["scaler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(resume["model"])
            self.ema.n_averaged += 1  # it has averaged before: the next update blends instead of copying
        if self.plateau is not None:  # over a fresh schedule's state: a format-1 checkpoint saved only its progress
            self.plateau.load_state_dict(self.plateau.state_dict() | resume["plateau"])


# train.py's train_step(cfg, machine, trainer, images, targets) -> (logits, targets trained on, loss)
TrainStep = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def build_trainer(cfg: Config, machine: Machine, loaders: Loaders, resume: dict | None) -> Trainer:
    model = init_model(cfg, len(loaders.classes), resume, machine).to(machine.device, memory_format=torch.channels_last)
    step_model = model
    if machine.world > 1:
        step_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[machine.device.index] if machine.device.type == "cuda" else None)
    if cfg.compile:
        step_model = torch.compile(step_model)
    optimizer = build_optimizer(cfg, model)
    basis = resume.get("lighting") if resume else None
    if cfg.lighting and basis is None:
        basis = lighting_basis(loaders.train.dataset)
    return Trainer(model=model, step_model=step_model, optimizer=optimizer,
                   scaler=torch.amp.GradScaler(machine.device.type, enabled=machine.precision == "fp16"),
                   criterion=nn.CrossEntropyLoss(weight=class_weights(loaders.balance, loaders.counts, machine.device),
                                                 label_smoothing=cfg.label_smoothing),
                   plateau=plateau_schedule(cfg, optimizer), ema=weight_average(cfg, model),
                   lighting_basis=basis,
                   lighting=transforms.Lighting(*basis, std=cfg.lighting) if cfg.lighting else None,
                   mix=batch_mixing(cfg, len(loaders.classes)))


def throwaway_copy(cfg: Config, trainer: Trainer) -> Trainer:
    """A copy that a measurement may train (--budget times train.py's step on it): its own
    weights, optimizer, GradScaler and weight average; the run's own stay untouched."""
    model = copy.deepcopy(trainer.model)
    return dataclasses.replace(trainer, model=model, step_model=model, optimizer=build_optimizer(cfg, model),
                               scaler=torch.amp.GradScaler(next(model.parameters()).device.type,
                                                            enabled=trainer.scaler.is_enabled()),
                               plateau=None, ema=weight_average(cfg, model))


def class_weights(balance: str, counts: list[int], device: torch.device) -> torch.Tensor | None:
    """--balance loss: each class's loss weighted by n / (classes x its images), so every
    class contributes alike (scikit-learn's "balanced" weights)."""
    if balance != "loss":
        return None
    return torch.tensor([sum(counts) / (len(counts) * max(c, 1)) for c in counts], device=device)


def init_model(cfg: Config, num_classes: int, resume: dict | None, machine: Machine) -> AlexNet:
    torch.manual_seed(cfg.seed)
    if cfg.weights and not resume:
        model = pretrained_model(cfg, num_classes, machine)
    else:
        model = AlexNet(num_classes, init_weights=cfg.init == "arch", arch=cfg.arch, dropout=cfg.dropout,
                        **switches_of(cfg.variant))
    if resume:
        model.load_state_dict(resume["raw_model"] if cfg.ema else resume["model"])
    if cfg.freeze_features:
        for p in model.features.parameters():
            p.requires_grad_(False)
    return model


def pretrained_model(cfg: Config, num_classes: int, machine: Machine) -> AlexNet:
    """--weights: every layer from the file except the last, which is new and sized for our classes."""
    ckpt = load_weights(cfg.weights)
    model = AlexNet(num_classes, arch=cfg.arch, dropout=cfg.dropout, **switches_of(cfg.variant))
    body = {k: v for k, v in ckpt["model"].items() if not k.startswith("classifier.6.")}
    try:
        missing, unexpected = model.load_state_dict(body, strict=False)
    except RuntimeError:
        missing, unexpected = [], ["(shapes differ)"]
    if unexpected or set(missing) != {"classifier.6.weight", "classifier.6.bias"}:
        raise CheckpointError(f"{cfg.weights}: does not fit AlexNet(arch={cfg.arch!r}) "
                              f"(missing {sorted(missing)}, unexpected {sorted(unexpected)})")
    machine.log(f"initialised from {cfg.weights} (arch {cfg.arch}); new {num_classes}-class head")
    return model


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() > 1], "weight_decay": cfg.wd},
              {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]  # no weight decay on biases
    # one fused kernel per step instead of a loop over tensors (measured: docs/performance.md)
    fused = {"fused": True} if params[0].device.type in ("cpu", "cuda") else {}
    if cfg.opt == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, **fused)
    return (torch.optim.AdamW if cfg.opt == "adamw" else torch.optim.Adam)(groups, lr=cfg.lr, **fused)


def plateau_schedule(cfg: Config, optimizer) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """--sched plateau (the paper): LR / 10 after --patience epochs without a better top-1.
    torch counts an epoch as bad when top-1 is not above the best (threshold 0) and divides
    on the bad epoch after ``patience`` of them, hence patience - 1."""
    if cfg.sched != "plateau":
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=cfg.patience - 1,
                                                      threshold=0.0, threshold_mode="abs")


def weight_average(cfg: Config, model: nn.Module) -> nn.Module | None:
    """--ema: torch's AveragedModel with an exponential moving average of the parameters."""
    if not cfg.ema:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema))


def batch_mixing(cfg: Config, num_classes: int) -> Callable | None:
    """torchvision's MixUp and/or CutMix on normalised batches (one of them per batch if both)."""
    from torchvision.transforms import v2

    mixes = [cls(alpha=alpha, num_classes=num_classes) for cls, alpha in
             ((v2.MixUp, cfg.mixup_alpha), (v2.CutMix, cfg.cutmix_alpha)) if alpha]
    if len(mixes) == 2:
        return v2.RandomChoice(mixes)
    return mixes[0] if mixes else None


def lighting_basis(dataset) -> list:
    """PCA of the training pixels: every cached image, or 500 decoded ones."""
    if dataset.cached:
        return list(transforms.pca_basis(dataset.images))
    return list(transforms.pca_basis(dataset[i][0] for i in range(min(500, len(dataset)))))

"""AlexNet in three widths, laid out like torchvision's ``models/alexnet.py``, with each
design choice of the paper a switch that can be turned (tools/study.py measures them).

    from model import AlexNet
    net = AlexNet(num_classes=5, init_weights=True)          # the tutorial's half-width net
    net = AlexNet(num_classes=1000, arch="torchvision")      # loads torchvision's weights
    net = AlexNet(num_classes=1000, arch="paper")            # Krizhevsky et al. 2012: LRN, two columns
    net = AlexNet(num_classes=5, activation="tanh", pool=2)  # the tutorial's net, two choices undone

The attribute names ``features`` / ``avgpool`` / ``classifier`` and the layer order
keep the state_dict keys equal to the tutorial's ``AlexNet.pth`` and to
``torchvision.models.alexnet().state_dict()``.
"""
from typing import NamedTuple

import torch
from torch import nn


class Arch(NamedTuple):
    widths: tuple[int, int, int, int, int]  # output channels of the five convolutions
    hidden: int                             # width of the two hidden fully connected layers
    lrn: bool                               # local response normalisation after conv 1 and 2
    columns: int                            # 2: the paper's two-GPU layout (section 3.2)


ARCHS: dict[str, Arch] = {
    "tutorial": Arch((48, 128, 192, 192, 128), 2048, lrn=False, columns=1),
    "torchvision": Arch((64, 192, 384, 256, 256), 4096, lrn=False, columns=1),
    "paper": Arch((96, 256, 384, 384, 256), 4096, lrn=True, columns=2),
}
ACTIVATIONS = ("relu", "tanh", "sigmoid")
MIDDLE_CONVS = (3, 4)  # the convolutions that can be removed: those not followed by pooling

# The switches as train.py's --variant names them: each sets one AlexNet argument.
VARIANTS: dict[str, tuple[str, object]] = {
    "relu": ("activation", "relu"), "tanh": ("activation", "tanh"), "sigmoid": ("activation", "sigmoid"),
    "lrn": ("lrn", True), "no-lrn": ("lrn", False),
    "pool3": ("pool", 3), "pool2": ("pool", 2),
    "one-column": ("columns", 1), "two-column": ("columns", 2),
    "no-conv3": ("remove_conv", 3), "no-conv4": ("remove_conv", 4),
}


def switches_of(variant: tuple[str, ...] | list[str]) -> dict:
    """AlexNet's keyword arguments for --variant names, e.g. ("tanh", "pool2"); two names
    that set the same switch are refused."""
    chosen: dict = {}
    for name in variant:
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        key, value = VARIANTS[name]
        if key in chosen and chosen[key] != value:
            raise ValueError(f"{name!r} and another variant both set {key}; keep one")
        chosen[key] = value
    return chosen


def default_switches(arch: str) -> dict:
    """The switches of ``arch`` as it is: ReLU, overlapping pooling, all five convolutions."""
    return dict(activation="relu", lrn=ARCHS[arch].lrn, pool=3, columns=ARCHS[arch].columns, remove_conv=0)


def variant_of(arch: str, switches: dict) -> tuple[str, ...]:
    """The --variant names that turn ``arch`` into the net of ``switches`` (their inverse)."""
    defaults = default_switches(arch)
    return tuple(name for name, (key, value) in VARIANTS.items() if switches[key] == value != defaults[key])


def _activation(name: str) -> nn.Module:
    # paper section 3.1: ReLUs train several times faster than the saturating tanh and sigmoid
    return {"relu": lambda: nn.ReLU(inplace=True), "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[name]()


def _block(in_ch: int, out_ch: int, kernel: int, activation: str, lrn: bool, pool: int, groups: int,
           **conv) -> list[nn.Module]:
    layers = [nn.Conv2d(in_ch, out_ch, kernel_size=kernel, groups=groups, **conv), _activation(activation)]
    if lrn:
        # paper section 3.3: k=2, n=5, alpha=1e-4, beta=0.75, applied after the ReLU
        layers.append(nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0))
    if pool:
        # paper section 3.4: a 3 x 3 window every 2 px overlaps its neighbours; 2 x 2 does not
        layers.append(nn.MaxPool2d(kernel_size=pool, stride=2))
    return layers


class AlexNet(nn.Module):
    """``arch`` sets the widths and the paper's LRN and columns; the other arguments undo or
    add one design choice each (None: the arch's own):

    - ``activation``: relu, tanh or sigmoid, in every layer (paper 3.1)
    - ``lrn``: response normalisation after convolutions 1 and 2 (3.3)
    - ``pool``: max-pooling window, 3 (overlapping, stride 2) or 2 (not) (3.4)
    - ``columns``: 2 splits convolutions 2, 4 and 5 into two groups that see only their own
      half of the channels, as the paper's two GPUs did; 3 and the FC layers see both (3.2)
    - ``dropout``: before the two hidden FC layers, 0 = none (4.2)
    - ``remove_conv``: 3 or 4 leaves that middle convolution out (7: "about 2% top-1")
    """

    def __init__(self, num_classes: int = 1000, init_weights: bool = False, arch: str = "tutorial",
                 dropout: float = 0.5, activation: str | None = None, lrn: bool | None = None,
                 pool: int | None = None, columns: int | None = None, remove_conv: int | None = None) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        widths, hidden = ARCHS[arch].widths, ARCHS[arch].hidden
        self.arch = arch
        given = dict(activation=activation, lrn=lrn, pool=pool, columns=columns, remove_conv=remove_conv)
        self.switches = default_switches(arch) | {k: v for k, v in given.items() if v is not None}
        check_switches(self.switches)
        activation, lrn, pool, columns, remove_conv = self.switches.values()
        # (number, kernel, the conv's padding and stride, followed by LRN, pooled, split into columns)
        convs = [(1, 11, dict(stride=4, padding=2), lrn, True, False), (2, 5, dict(padding=2), lrn, True, True),
                 (3, 3, dict(padding=1), False, False, False), (4, 3, dict(padding=1), False, False, True),
                 (5, 3, dict(padding=1), False, True, True)]
        self.conv_numbers = [n for n, *_ in convs if n != remove_conv]
        layers: list[nn.Module] = []
        in_ch = 3
        for number, kernel, conv, normalised, pooled, split in convs:
            if number == remove_conv:
                continue
            out_ch = widths[number - 1]
            layers += _block(in_ch, out_ch, kernel, activation, normalised, pool if pooled else 0,
                             columns if split else 1, **conv)
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        # identity for 224 px inputs (6x6 already); lets any input of at least 63 px work
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(widths[4] * 6 * 6, hidden),
            _activation(activation),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            _activation(activation),
            nn.Linear(hidden, num_classes),
        )
        if init_weights:
            if arch == "paper":
                self._initialize_paper()
            else:
                self._initialize_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

    def _initialize_weights(self) -> None:
        """The tutorial's initialisation: Kaiming for convolutions, N(0, 0.01) for FC layers."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def _initialize_paper(self) -> None:
        """Paper section 5: all weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the
        hidden FC layers (to give the ReLUs positive inputs early on), 0 elsewhere."""
        convs = dict(zip(self.conv_numbers, (m for m in self.features if isinstance(m, nn.Conv2d))))
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        ones = {id(m) for n, m in convs.items() if n in (2, 4, 5)} | {id(linears[0]), id(linears[1])}
        for m in [*convs.values(), *linears]:
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 1.0 if id(m) in ones else 0.0)


def check_switches(switches: dict) -> None:
    """A ValueError naming the first switch whose value is not one AlexNet has."""
    allowed = dict(activation=ACTIVATIONS, lrn=(False, True), pool=(2, 3), columns=(1, 2),
                   remove_conv=(0, *MIDDLE_CONVS))
    for key, values in allowed.items():
        if key not in switches or switches[key] not in values or type(switches[key]) is not type(values[-1]):
            raise ValueError(f"{key} must be one of {', '.join(map(str, values))}, not {switches.get(key)!r}")
    if set(switches) - set(allowed):
        raise ValueError(f"unknown switch {sorted(set(switches) - set(allowed))[0]!r}")


def probabilities(model: nn.Module, images: torch.Tensor, views: int = 1, temperature: float = 1.0) -> torch.Tensor:
    """Softmax over classes of normalised ``images``, averaged over ``views`` consecutive
    test-time views per image, then calibrated by ``temperature``."""
    probs = model(images).float().softmax(dim=1)
    probs = probs.view(-1, views, probs.shape[1]).mean(dim=1) if views > 1 else probs
    return calibrated(probs, temperature)


def calibrated(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temperature scaling, softmax(log p / T), applied after any averaging of views, so that
    evaluate.py fits T on exactly what predict.py reports. Every probability moves the same
    way, so the predicted class never changes. (predict.py's ONNX path does the same in numpy.)"""
    if temperature == 1.0:
        return probs
    return (probs.clamp_min(1e-12).log() / temperature).softmax(dim=1)


def grad_cam(model: AlexNet, images: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017) from the last convolution: each activated feature
    map weighted by the mean gradient of the class score over it, summed, rectified,
    resized to the input and scaled to [0, 1]. ``images`` are normalised model inputs;
    ``classes`` default to the predicted ones. Returns N x H x W."""
    last_conv = max(i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d))
    maps: list[torch.Tensor] = []
    handle = model.features[last_conv + 1].register_forward_hook(lambda module, inputs, output: maps.append(output))
    try:
        with torch.enable_grad():
            logits = model(images)
            chosen = logits.argmax(1) if classes is None else classes.to(logits.device)
            grads = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), maps[0])[0]
    finally:
        handle.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * maps[0]).sum(dim=1, keepdim=True)).detach()
    cam = torch.nn.functional.interpolate(cam.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (cam / peak)[:, 0]

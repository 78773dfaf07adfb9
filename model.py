"""AlexNet in three widths, laid out like torchvision's ``models/alexnet.py``.

    from model import AlexNet
    net = AlexNet(num_classes=5, init_weights=True)          # the tutorial's half-width net
    net = AlexNet(num_classes=1000, arch="torchvision")      # loads torchvision's weights
    net = AlexNet(num_classes=1000, arch="paper")            # Krizhevsky et al. 2012

The attribute names ``features`` / ``avgpool`` / ``classifier`` and the layer order
keep the state_dict keys equal to the tutorial's ``AlexNet.pth`` and to
``torchvision.models.alexnet().state_dict()``.
"""
import torch
from torch import nn

# conv widths (5 layers) and hidden FC width for each variant
ARCHS: dict[str, tuple[tuple[int, int, int, int, int], int]] = {
    "tutorial": ((48, 128, 192, 192, 128), 2048),
    "torchvision": ((64, 192, 384, 256, 256), 4096),
    "paper": ((96, 256, 384, 384, 256), 4096),
}


def _block(in_ch: int, out_ch: int, kernel: int, lrn: bool, pool: bool, **conv) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel_size=kernel, **conv), nn.ReLU(inplace=True)]
    if lrn:
        # paper section 3.3: k=2, n=5, alpha=1e-4, beta=0.75, applied after the ReLU
        layers.append(nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0))
    if pool:
        layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
    return layers


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000, init_weights: bool = False, arch: str = "tutorial",
                 dropout: float = 0.5) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        (c1, c2, c3, c4, c5), hidden = ARCHS[arch]
        lrn = arch == "paper"
        self.arch = arch
        self.features = nn.Sequential(
            *_block(3, c1, 11, lrn, True, stride=4, padding=2),
            *_block(c1, c2, 5, lrn, True, padding=2),
            *_block(c2, c3, 3, False, False, padding=1),
            *_block(c3, c4, 3, False, False, padding=1),
            *_block(c4, c5, 3, False, True, padding=1),
        )
        # identity for 224 px inputs (6x6 already); lets any input of at least 63 px work
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(c5 * 6 * 6, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        if init_weights:
            if lrn:
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
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        ones = {id(m) for m in (convs[1], convs[3], convs[4], linears[0], linears[1])}
        for m in convs + linears:
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 1.0 if id(m) in ones else 0.0)


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
    """Grad-CAM (Selvaraju et al., 2017) from the last convolution: each rectified feature
    map weighted by the mean gradient of the class score over it, summed, rectified,
    resized to the input and scaled to [0, 1]. ``images`` are normalised model inputs;
    ``classes`` default to the predicted ones. Returns N x H x W."""
    last_relu = [m for m in model.features if isinstance(m, nn.ReLU)][-1]
    maps: list[torch.Tensor] = []
    handle = last_relu.register_forward_hook(lambda module, inputs, output: maps.append(output))
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

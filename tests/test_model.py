"""model.py: the tutorial's layout and weights, torchvision's weights, the paper's variant."""
import pytest
import torch
import torch.nn as nn
import torchvision

from alexnet.checkpoint import from_checkpoint, infer_arch, load_checkpoint
from alexnet.errors import CheckpointError
from model import AlexNet


class TutorialAlexNet(nn.Module):
    """The seed tutorial's model.py, verbatim apart from formatting."""

    def __init__(self, num_classes=1000, init_weights=False):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 48, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(48, 128, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(128, 192, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(192, 192, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(192, 128, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), nn.Linear(128 * 6 * 6, 2048), nn.ReLU(inplace=True),
            nn.Dropout(p=0.5), nn.Linear(2048, 2048), nn.ReLU(inplace=True),
            nn.Linear(2048, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        x = torch.flatten(x, start_dim=1)
        return self.classifier(x)


def test_default_is_the_tutorial_layout_and_loads_its_weights(tmp_path):
    ref = TutorialAlexNet(num_classes=5).eval()
    path = tmp_path / "AlexNet.pth"
    torch.save(ref.state_dict(), path)  # what the tutorial's train.py writes
    ours = AlexNet(num_classes=5, init_weights=True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ours.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(ours.eval()(x), ref(x))


def test_tutorial_checkpoint_is_recognised(tmp_path):
    torch.save(TutorialAlexNet(num_classes=5).state_dict(), tmp_path / "AlexNet.pth")
    ckpt = load_checkpoint(str(tmp_path / "AlexNet.pth"))
    assert (ckpt["arch"], ckpt["num_classes"]) == ("tutorial", 5)
    assert isinstance(from_checkpoint(ckpt, "AlexNet.pth"), AlexNet)


def test_torchvision_state_dict_round_trip():
    tv = torchvision.models.alexnet(weights=None).eval()
    ours = AlexNet(num_classes=1000, arch="torchvision").eval()
    assert list(ours.state_dict()) == list(tv.state_dict())
    ours.load_state_dict(tv.state_dict())
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(ours(x), tv(x))
    assert tv.load_state_dict(ours.state_dict())  # and back
    assert infer_arch(tv.state_dict(), "tv.pth") == "torchvision"


def test_paper_variant_has_lrn_and_paper_init():
    net = AlexNet(num_classes=10, arch="paper", init_weights=True)
    lrn = [m for m in net.features if isinstance(m, nn.LocalResponseNorm)]
    assert [(m.size, m.alpha, m.beta, m.k) for m in lrn] == [(5, 1e-4, 0.75, 2.0)] * 2
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert [c.bias.mean().item() for c in convs] == [0, 1, 0, 1, 1]
    fcs = [m for m in net.classifier if isinstance(m, nn.Linear)]
    assert [f.bias.mean().item() for f in fcs] == [1, 1, 0]
    assert abs(convs[2].weight.std().item() - 0.01) < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["tutorial", "torchvision", "paper"])
def test_any_input_of_63_px_or_more(arch):
    net = AlexNet(num_classes=3, arch=arch).eval()
    for size in (63, 100, 224, 300):
        assert net(torch.randn(1, 3, size, size)).shape == (1, 3)
    with pytest.raises(RuntimeError):
        net(torch.randn(1, 3, 62, 62))


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="unknown arch"):
        AlexNet(arch="vgg")


def test_weights_of_another_class_count_name_the_file(tmp_path):
    torch.save(AlexNet(num_classes=7).state_dict(), tmp_path / "w.pth")
    ckpt = load_checkpoint(str(tmp_path / "w.pth"))
    ckpt["num_classes"] = 5
    with pytest.raises(CheckpointError, match="w.pth: weights do not fit"):
        from_checkpoint(ckpt, str(tmp_path / "w.pth"))


def test_an_unknown_first_conv_width_says_what_was_found(tmp_path):
    odd = AlexNet(num_classes=5).state_dict()
    odd["features.0.weight"] = torch.zeros(32, 3, 11, 11)
    torch.save(odd, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(str(tmp_path / "odd.pth"))
    assert str(e.value).startswith(f"{tmp_path / 'odd.pth'}: features.0.weight has 32 filters")
    assert "48 (tutorial), 64 (torchvision), 96 (paper)" in str(e.value)


def test_a_checkpoint_in_the_legacy_format_loads_with_or_without_mmap(tmp_path):
    net = AlexNet(num_classes=5)
    torch.save(net.state_dict(), tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    for mmap in (False, True):
        ckpt = load_checkpoint(str(tmp_path / "old.pth"), mmap=mmap)
        assert ckpt["num_classes"] == 5 and torch.equal(ckpt["model"]["features.0.weight"], net.features[0].weight)

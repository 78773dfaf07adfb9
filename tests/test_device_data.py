"""device_data.py on the CPU: the batched box sampler (transforms.sample_boxes, shared with the
per-image path) against torchvision's rules, the batched crop against resized_crop, padding,
flips, and a run that learns through it."""
import math
import random

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from alexnet import datasets, decoding, transforms
from alexnet import device_data, loaders
from alexnet import shapes
from alexnet import settings
import train
from conftest import run_train, train_args
from alexnet.machine import Machine

SCALE, RATIO = (0.25, 1.0), (3 / 4, 4 / 3)


def test_boxes_lie_inside_and_follow_the_requested_ranges_as_torchvision_draws_them():
    gen = torch.Generator().manual_seed(0)
    sizes = torch.tensor([[256, 256]] * 20000 + [[256, 400]] * 20000)
    top, left, h, w = transforms.sample_boxes(sizes, SCALE, RATIO, gen).unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= sizes[:, 0]).all() and (left + w <= sizes[:, 1]).all()
    area = (h * w).double() / sizes.prod(1).double()
    aspect = w.double() / h.double()
    assert area.min() >= SCALE[0] - 0.01 and area.max() <= 1.0
    assert aspect.min() >= RATIO[0] - 0.02 and aspect.max() <= RATIO[1] + 0.02  # rounding to whole pixels
    torch.manual_seed(0)
    crop = v2.RandomResizedCrop(224, scale=SCALE, ratio=RATIO)
    for (hh, ww), ours in (((256, 256), slice(0, 20000)), ((256, 400), slice(20000, None))):
        image = torch.zeros(3, hh, ww)
        theirs = [crop.make_params([image]) for _ in range(4000)]
        their_area = torch.tensor([p["height"] * p["width"] / (hh * ww) for p in theirs], dtype=torch.float64)
        their_log_aspect = torch.tensor([math.log(p["width"] / p["height"]) for p in theirs], dtype=torch.float64)
        assert abs(area[ours].mean() - their_area.mean()) < 0.015
        assert abs(area[ours].std() - their_area.std()) < 0.015
        assert abs(aspect[ours].log().mean() - their_log_aspect.mean()) < 0.015
        their_top = torch.tensor([p["top"] / max(1, hh - p["height"]) for p in theirs])
        assert abs((top[ours] / (hh - h[ours]).clamp_min(1)).mean() - their_top.mean()) < 0.03


@pytest.mark.parametrize("hw", [(1000, 10), (10, 1000), (300, 30)])
def test_the_fallback_is_torchvisions(hw):
    """No draw fits an image this elongated at this scale: both fall back to the same box."""
    gen = torch.Generator().manual_seed(0)
    ours = transforms.sample_boxes(torch.tensor([hw]), (0.9, 1.0), RATIO, gen)[0].tolist()
    params = v2.RandomResizedCrop(16, scale=(0.9, 1.0), ratio=RATIO).make_params([torch.zeros(3, *hw)])
    assert ours == [params["top"], params["left"], params["height"], params["width"]]


def photo(size: int = 256, seed: int = 0) -> torch.Tensor:
    return decoding.pil_to_tensor(shapes.draw_shape("star", size, random.Random(seed)))


@pytest.mark.parametrize("box, size", [((10, 20, 200, 180), 224), ((0, 0, 256, 256), 224), ((5, 5, 250, 250), 64),
                                       ((50, 60, 150, 100), 128), ((30, 40, 100, 120), 224)])
def test_batched_crop_matches_resized_crop_within_a_few_grey_levels(box, size):
    """roi_align averages bilinear samples over each output pixel, torchvision a triangle
    filter: on a photo-like picture they differ by well under one grey level on average."""
    img = photo()
    ours = device_data.crop_resize(img[None].float(), torch.tensor([box]), size)[0].round()
    theirs = TF.resized_crop(img, *box, [size, size], antialias=True).float()
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().mean() < 1.0
    assert ((ours - theirs).abs() > 16).double().mean() < 0.005


def test_padded_buckets_crop_as_the_images_alone_and_flips_are_exact():
    images = [photo(256, 0), photo(256, 1)[:, :200, :], photo(300, 2)[:, :, :170], photo(256, 3)[:, :256, :230]]
    resident = device_data.ResidentImages(images, [0, 1, 2, 3], torch.device("cpu"))
    assert [tuple(b.shape) for b in resident.buckets] == [(3, 3, 256, 256), (1, 3, 320, 192)]  # 64 px steps
    boxes = torch.tensor([[0, 0, 256, 256], [100, 50, 100, 206], [150, 20, 150, 150], [0, 30, 256, 200]])
    crops = resident.crops(torch.arange(4), boxes, 96)
    for img, box, crop in zip(images, boxes, crops):
        alone = device_data.crop_resize(img[None].float(), box[None], 96)[0].round().clamp(0, 255).to(torch.uint8)
        assert torch.equal(crop, alone)  # the padding never shows, even at the right and bottom edges
    batches = device_data.DeviceBatches(None, resident, batch_size=4, scale=SCALE, crop_size=96, drop_last=False)
    batches.generator.manual_seed(5)
    replay = torch.Generator().manual_seed(5)
    (got, targets), = list(batches)
    order = torch.randperm(4, generator=replay)
    crops = resident.crops(order, transforms.sample_boxes(resident.sizes[order], SCALE, RATIO, replay), 96)
    flip = torch.rand(4, generator=replay) < 0.5
    for g, c, f in zip(got, crops, flip):
        assert torch.equal(g, c.flip(-1) if f else c)
    assert targets.tolist() == order.tolist()


@pytest.mark.slow
def test_a_run_through_the_batched_path_learns(colour_data, tmp_path, capsys):
    summary = run_train(train_args(colour_data, tmp_path, "--device-batches", "on", "--epochs", "4"))
    assert "training batches: built on cpu from 30 resident images" in capsys.readouterr().out
    assert max(r["val_top1"] for r in summary["history"]) > 0.5
    losses = [r["train_loss"] for r in summary["history"]]
    assert losses[-1] < losses[0]


def aug_choices() -> list[str]:
    return next(a.choices for a in train.get_args_parser()._actions if a.dest == "aug")


@pytest.mark.slow
@pytest.mark.parametrize("aug", aug_choices())
def test_device_batches_on_runs_each_augmentation_it_implements_and_refuses_the_rest(aug, colour_data, tmp_path,
                                                                                     capsys):
    argv = train_args(colour_data, tmp_path / "on", "--device-batches", "on", "--epochs", "1", "--aug", aug)
    if aug == "none":
        run_train(argv)
        assert "training batches: built on cpu" in capsys.readouterr().out
        return
    assert train.cli(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: --device-batches on: batches built on the device do not implement --aug {aug}; " \
                          f"drop one of the two" and not (tmp_path / "on").exists()
    cfg, _ = settings.resolve_config(train.get_args_parser().parse_args(
        train_args(colour_data, tmp_path / "auto", "--device-batches", "auto", "--aug", aug)))
    machine = Machine(torch.device("cuda"), "fp32")  # auto would build batches on a GPU: not with this --aug
    split = datasets.CachedImageFolder(str(colour_data / "train"), datasets.CachePolicy(None, 2**30),
                                       pre_transform=transforms.ShortSide(73), log=lambda line: None)
    on_device, why = loaders.device_batches_decision(cfg, machine, split, range(len(split)))
    assert not on_device and why.endswith(f"batches built on the device do not implement --aug {aug}")


def test_every_aug_choice_changes_what_train_augment_builds_and_is_a_device_gap():
    """Each --aug besides none is one transforms.train_augment builds (the pipeline differs from
    none's), and one batches built on the device do not implement; --balance sampler is the
    other such setting."""
    plain = repr(transforms.train_augment(64, (0.25, 1.0), "none"))
    assert settings.Config().device_gaps == ""
    for aug in aug_choices():
        if aug != "none":
            assert repr(transforms.train_augment(64, (0.25, 1.0), aug)) != plain, aug
            assert settings.Config(aug=aug).device_gaps == f"--aug {aug}"
    assert settings.Config(balance="sampler").device_gaps == "--balance sampler"
    assert settings.Config(balance="loss").device_gaps == ""

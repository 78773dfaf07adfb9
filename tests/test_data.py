"""data.py: decoding, the cached and per-epoch paths, augmentation, the evaluation
transform (against torchvision's own), 10-crop, PCA lighting, EXIF orientation."""
import importlib.util
import multiprocessing
import os
import time

import pytest
import torch
from PIL import Image

from alexnet import datasets, decoding, transforms
from alexnet import images
from alexnet import folders
from conftest import make_colour_folder, run_train, train_args


def build(root, cache_dir, mem_budget, log=print):
    policy = datasets.CachePolicy(str(cache_dir), mem_budget, "error", quiet=True)
    return datasets.CachedImageFolder(str(root / "train"), policy, pre_transform=transforms.ShortSide(73),
                                      transform=transforms.train_augment(64, (0.25, 1.0), "none"), log=log)


def test_cached_and_per_epoch_paths_give_the_same_kind_of_batch(colour_data, tmp_path):
    cached = build(colour_data, tmp_path / "c", 2**30)
    plain = build(colour_data, tmp_path / "p", 0)
    assert cached.cached and not plain.cached
    assert cached.classes == ["blue", "green", "red"] and cached.targets == plain.targets
    torch.manual_seed(0)
    a = torch.stack([cached[i][0] for i in range(8)])
    torch.manual_seed(0)
    b = torch.stack([plain[i][0] for i in range(8)])
    assert a.shape == b.shape == (8, 3, 64, 64) and a.dtype == b.dtype == torch.uint8
    torch.testing.assert_close(a, b)  # same pixels: the cache only moves the decode
    x = transforms.normalize(a, [0.5] * 3, [0.5] * 3)
    assert x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_a_batch_is_cropped_from_its_first_key_and_from_nothing_else(colour_data, tmp_path):
    """SeededSampler's keys decide a batch's crops and flips: the same keys give the same
    pixels whatever the process drew before, on the cached and the per-epoch path alike (so
    DataLoader workers and a run resumed at that batch see them too); another epoch's seed,
    other crops. Each crop is torchvision's resized_crop of a box sample_boxes drew."""
    cached, plain = build(colour_data, tmp_path / "c", 2**30), build(colour_data, tmp_path / "p", 0)
    keys = [(i, 1000 + i) for i in range(8)]
    first = torch.stack([img for img, _ in cached.__getitems__(keys)])
    torch.rand(1000)  # the global generator moves on: the batch does not change
    again = torch.stack([img for img, _ in plain.__getitems__(keys)])
    assert torch.equal(first, again) and first.shape == (8, 3, 64, 64)
    other_epoch = torch.stack([img for img, _ in cached.__getitems__([(i, 5 + i) for i in range(8)])])
    assert not torch.equal(first, other_epoch)
    from torchvision.transforms.v2 import functional as TF

    gen = torch.Generator().manual_seed(1000)
    sizes = torch.tensor([cached.images[i].shape[-2:] for i in range(8)])
    boxes = transforms.sample_boxes(sizes, (0.25, 1.0), transforms.CROP_RATIO, gen).tolist()
    flips = (torch.rand(8, generator=gen) < 0.5).tolist()
    for i, (box, flip) in enumerate(zip(boxes, flips)):
        expected = TF.resized_crop(cached.images[i], *box, [64, 64], antialias=True)
        assert torch.equal(first[i], TF.horizontal_flip(expected) if flip else expected)


def test_each_image_of_a_batch_gets_its_own_box_and_half_are_flipped():
    from torchvision.transforms.v2 import functional as TF

    img = torch.arange(3 * 100 * 100).remainder(251).to(torch.uint8).view(3, 100, 100)
    crops = transforms.train_augment(32, (0.25, 1.0), "none")([img] * 400, torch.Generator().manual_seed(0))
    assert len({c.numpy().tobytes() for c in crops}) > 390
    whole = transforms.TrainAugment(32, (1.0, 1.0), None)([img] * 400, torch.Generator().manual_seed(1))
    plain = TF.resize(img, [32, 32], antialias=True)  # scale 1: the whole image, so only the flip varies
    assert all(torch.equal(c, plain) or torch.equal(c, plain.flip(-1)) for c in whole)
    assert 150 < sum(torch.equal(c, plain.flip(-1)) for c in whole) < 250


def test_cache_is_reused_and_rebuilt_when_files_change(colour_data, tmp_path):
    logs = []
    build(colour_data, tmp_path / "c", 2**30, logs.append)
    files = list((tmp_path / "c").glob("*.pt"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    build(colour_data, tmp_path / "c", 2**30, logs.append)
    assert files[0].stat().st_mtime_ns == stamp  # reused
    victim = colour_data / "train" / "red" / "red_0.jpg"
    original = victim.read_bytes()
    try:
        Image.new("RGB", (80, 80), (0, 0, 255)).save(victim)
        os.utime(victim, ns=(time.time_ns(), time.time_ns() + 10**9))
        split = build(colour_data, tmp_path / "c", 2**30, logs.append)
        new = list((tmp_path / "c").glob("*.pt"))
        assert len(new) == 1 and new[0] != files[0]  # rebuilt, the stale one removed
        idx = [p for p, _ in split.samples].index(str(victim))
        assert split.images[idx][2].float().mean() > 200  # the new blue picture, not the old red one
    finally:
        victim.write_bytes(original)


def test_memory_budget_chooses_the_path_and_says_so(colour_data, tmp_path):
    logs = []
    build(colour_data, tmp_path / "c", 1000, logs.append)
    assert "decoded every epoch" in logs[-1] and "budget" in logs[-1]
    build(colour_data, tmp_path / "c", 2**30, logs.append)
    assert "cached in memory" in logs[-1]


@pytest.mark.parametrize("extra", ["none", "trivialaugment", "colorjitter"])
def test_augmentations_keep_shape_dtype_and_range(extra):
    img = torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8)
    aug = transforms.train_augment(64, (0.08, 1.0), extra)
    for out in aug([img] * 5, torch.Generator().manual_seed(0)):
        assert out.shape == (3, 64, 64) and out.dtype == torch.uint8


def test_eval_transform_resize_crop_and_tutorial_squash():
    img = torch.randint(0, 256, (3, 100, 200), dtype=torch.uint8)
    assert transforms.EvalTransform(64, 73)(img).shape == (3, 64, 64)
    assert transforms.EvalTransform(64, 0)(img).shape == (3, 64, 64)
    solid = torch.full((3, 50, 80), 77, dtype=torch.uint8)
    assert (transforms.EvalTransform(32, 40)(solid) == 77).all()


@pytest.mark.parametrize("seed", range(4))
def test_hand_written_transforms_match_torchvision(seed):
    """resize / center_crop / ten_crop stand in for transforms.v2 so that predict.py need not
    import torchvision: they must give torchvision's pixels."""
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as TF

    gen = torch.Generator().manual_seed(seed)
    h, w = torch.randint(40, 300, (2,), generator=gen).tolist()
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
    size = int(torch.randint(16, min(h, w) + 1, (1,), generator=gen))
    short = int(torch.randint(size, 2 * size + 1, (1,), generator=gen))
    torch.testing.assert_close(transforms.resize(img, (size, size + 3)),
                               TF.resize(img, [size, size + 3], antialias=True), atol=1, rtol=0)
    if max(h, w) <= images.MAX_ASPECT * min(h, w):  # no end is cut off
        torch.testing.assert_close(transforms.resize_short(img, short), v2.Resize(short, antialias=True)(img),
                                   atol=1, rtol=0)
    assert torch.equal(transforms.center_crop(img, size), v2.CenterCrop(size)(img))
    assert torch.equal(transforms.ten_crop(img, size), torch.stack(v2.TenCrop(size)(img)))


def test_resize_on_float_devices_rounds_like_the_uint8_path():
    img = torch.randint(0, 256, (3, 57, 91), dtype=torch.uint8)
    via_float = torch.nn.functional.interpolate(img[None].float(), size=(30, 40), mode="bilinear", antialias=True,
                                                align_corners=False).round().clamp(0, 255).to(torch.uint8)[0]
    torch.testing.assert_close(transforms.resize(img, (30, 40)), via_float, atol=1, rtol=0)


def test_ten_crop_gives_ten_views_and_evaluate_averages_them():
    img = torch.arange(3 * 8 * 10, dtype=torch.uint8).view(3, 8, 10)
    views = transforms.ten_crop(img, 6)
    assert views.shape == (10, 3, 6, 6)
    assert torch.equal(views[0], img[:, :6, :6]) and torch.equal(views[3], img[:, 2:, 4:])
    assert torch.equal(views[5], img.flip(-1)[:, :6, :6]) and torch.equal(views[6], views[0].flip(-1))
    ten = transforms.EvalTransform(64, 73, tta=True)(torch.zeros(3, 80, 100, dtype=torch.uint8))
    assert ten.shape == (10, 3, 64, 64)
    from model import probabilities

    class Fixed(torch.nn.Module):  # logits that differ per view
        def forward(self, x):
            return torch.log(torch.tensor([[0.9, 0.1], [0.3, 0.7]]).repeat(x.shape[0] // 2, 1))

    probs = probabilities(Fixed(), torch.zeros(4, 3, 8, 8), views=2)
    torch.testing.assert_close(probs, torch.tensor([[0.6, 0.4], [0.6, 0.4]]))


def test_ten_crop_of_a_squashed_image_gives_ten_different_views():
    """--tta with the tutorial's squashing resize: the views come from a 256/224 larger
    square, so they differ (before, all five crops of a 224 px square were the same)."""
    img = torch.randint(0, 256, (3, 90, 130), dtype=torch.uint8)
    views = transforms.EvalTransform(64, 0, tta=True)(img)
    assert views.shape == (10, 3, 64, 64)
    assert len({v.flatten().tolist().__repr__() for v in views}) == 10


def test_pca_lighting_zero_std_is_identity_and_otherwise_shifts_colour():
    images = [torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8) for _ in range(4)]
    eigval, eigvec = transforms.pca_basis(images)
    assert len(eigval) == 3 and all(v >= 0 for v in eigval)
    vec = torch.tensor(eigvec)
    torch.testing.assert_close(vec.T @ vec, torch.eye(3), atol=1e-5, rtol=0)
    x = torch.rand(5, 3, 8, 8)
    assert torch.equal(transforms.Lighting(eigval, eigvec, std=0)(x), x)
    shifted = transforms.Lighting(eigval, eigvec, std=0.1)(x)
    assert shifted.shape == x.shape and shifted.dtype == x.dtype
    delta = shifted - x
    # one shift per image and channel
    torch.testing.assert_close(delta, delta[..., :1, :1].expand_as(delta), atol=1e-6, rtol=0)
    assert delta.abs().max() > 0


def test_normalize_is_the_textbook_formula_with_and_without_lighting():
    batch = torch.randint(0, 256, (4, 3, 9, 7), dtype=torch.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(transforms.normalize(batch, mean, std), (batch / 255 - m) / s)
    lighting = transforms.Lighting([0.2, 0.02, 0.002], torch.eye(3).tolist(), std=0.1)
    torch.manual_seed(0)
    expected = (lighting(batch / 255) - m) / s
    torch.manual_seed(0)
    torch.testing.assert_close(transforms.normalize(batch, mean, std, lighting), expected)
    views = transforms.normalize(batch.view(2, 2, 3, 9, 7), mean, std)  # ten-crop batches: N x views x CHW
    assert views.shape == (4, 3, 9, 7) and views.is_contiguous(memory_format=torch.channels_last)


def test_decoders_agree_and_read_odd_modes(tmp_path):
    base = Image.effect_noise((40, 30), 60).convert("RGB")
    base.save(tmp_path / "a.jpg", quality=90)
    assert torch.equal(decoding.decode_rgb(str(tmp_path / "a.jpg")), decoding.decode_pillow(str(tmp_path / "a.jpg")))
    Image.new("I;16", (9, 7), 40000).save(tmp_path / "deep.png")
    base.convert("CMYK").save(tmp_path / "cmyk.jpg")
    base.convert("RGBA").save(tmp_path / "rgba.png")
    Image.new("RGB", (1, 1), (5, 6, 7)).save(tmp_path / "dot.png")
    for name, size in (("deep.png", (7, 9)), ("cmyk.jpg", (30, 40)), ("rgba.png", (30, 40)), ("dot.png", (1, 1))):
        img = decoding.decode_rgb(str(tmp_path / name))
        assert img.dtype == torch.uint8 and img.shape == (3, *size), name
    assert decoding.decode_rgb(str(tmp_path / "deep.png")).max() == 40000 // 256


@pytest.mark.slow
def test_uncached_training_data_works_in_spawned_loader_workers(colour_data, tmp_path):
    """Windows and macOS start DataLoader workers with spawn, which pickles the data set:
    the per-epoch path must hold no lambda."""
    split = build(colour_data, tmp_path / "c", 0)
    assert not split.cached
    loader = torch.utils.data.DataLoader(split, batch_size=5, num_workers=1,
                                         multiprocessing_context=multiprocessing.get_context("spawn"))
    images, targets = next(iter(loader))
    assert images.shape == (5, 3, 64, 64) and images.dtype == torch.uint8 and len(targets) == 5


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_reduces_the_loss_in_each_precision(precision, tmp_path):
    root = make_colour_folder(tmp_path / "d", n_train=6, n_val=2)
    summary = run_train(train_args(root, tmp_path / "o", "--epochs", "4", "--precision", precision,
                                   "--lr", "3e-4", "--batch-size", "6", "--clip-grad", "0"))
    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[-1] < losses[0], losses


def test_training_decodes_with_torchcodec_and_falls_back_to_pillow(tmp_path, monkeypatch):
    if importlib.util.find_spec("torchcodec") is not None:
        assert set(decoding.codec_decoders()) == {"JPEG", "PNG"}  # the decoder train.py uses, where installed
    base = Image.effect_noise((40, 30), 60).convert("RGB")
    base.save(tmp_path / "a.jpg", quality=90)
    base.save(tmp_path / "a.png")
    with_codec = [decoding.decode_rgb(str(tmp_path / name)) for name in ("a.jpg", "a.png")]
    monkeypatch.setattr(decoding, "_CODEC_DECODERS", {})  # TorchCodec missing, or a build that does not load
    for name, decoded in zip(("a.jpg", "a.png"), with_codec):
        assert torch.equal(decoded, decoding.decode_rgb(str(tmp_path / name)))
        assert torch.equal(decoded, decoding.decode_pillow(str(tmp_path / name)))


def test_avif_photos_join_and_jpeg_xl_ones_are_skipped_naming_a_file_and_what_to_do(tmp_path):
    from PIL import features

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.effect_noise((40, 30), 60).convert("RGB").save(folder / "a.jpg")
    (folder / "photo.JXL").write_bytes(b"\xff\x0a")
    (folder / "notes.txt").write_text("x")
    if features.check("avif"):
        Image.effect_noise((40, 30), 60).convert("RGB").save(folder / "b.avif")
    listing = folders.list_images(str(folder))
    assert [os.path.basename(f) for f in listing.files] == ["a.jpg"] + (["b.avif"] if features.check("avif") else [])
    said = folders.describe_skipped(listing)
    assert f"1 .JXL (JPEG XL images no decoder here reads, such as {folder / 'photo.JXL'}: convert them to JPEG or " \
        f"PNG)" in said and "1 .txt" in said
    if features.check("avif"):
        avif = str(folder / "b.avif")
        assert decoding.decode_rgb(avif).shape == (3, 30, 40)
        assert torch.equal(decoding.decode_rgb(avif), decoding.decode_pillow(avif))

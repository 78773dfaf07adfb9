"""Training batches built on the training device, from images uploaded to it once.

    python train.py --device-batches on     # force it, also on a CPU (bench.py compares both paths)

On CUDA, when the decoded training images fit ``--device-cache-mem``, train.py keeps them
on the GPU as uint8 and builds every batch there, as the CIFAR-10 speed runs and FFCV do:
RandomResizedCrop boxes for the whole batch drawn at once with torchvision's rules (scale
and ratio ranges, ten tries, the same fallback), one batched crop-and-resize
(``torchvision.ops.roi_align``), horizontal flips; normalisation, PCA lighting and
MixUp/CutMix then run on the batch where it is, as on every path. The stored validation
crops move to the device as well. Nothing crosses the PCIe bus or waits for loader
workers during an epoch.

Images of different sizes are kept in a few buckets, each one padded tensor: an image goes
to the bucket of its height and width rounded up to 64 px. Typical photo sets then need
one to three buckets (the flower photos: one, all 256 x 256), padding wastes under 64 px
per side, and a batch is cropped with one roi_align call per bucket it touches. One padded
tensor for all would waste up to 4x for mixed portrait and landscape photos; a list of
separate tensors would need one call per image.

Against the per-image path (``transforms.TrainAugment``): the boxes are drawn the same way
(``transforms.sample_boxes``, torchvision's distribution for the whole batch); roi_align averages a
grid of bilinear samples over each output pixel where torchvision uses a triangle filter
over it, so a downscaled crop differs by a few grey levels (tests/test_device_data.py
bounds it), an amount the augmentation itself dwarfs.
"""
import math

import torch
from torch import Tensor

from alexnet.transforms import CROP_RATIO, sample_boxes

BUCKET_STEP = 64
# This path does the crop and the flip, and leaves class balance to the loss: --aug and
# --balance sampler send training back to the per-image path (settings.Config.device_gaps).


def crop_resize(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Crop every image of a float N x 3 x H x W batch to its (top, left, height, width)
    box and resize it to ``size`` x ``size``, in one call."""
    from torchvision.ops import roi_align

    top, left, height, width = boxes.to(images.dtype).unbind(1)
    rois = torch.stack([torch.arange(len(images), device=images.device, dtype=images.dtype),
                        left, top, left + width, top + height], dim=1)
    return roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


class ResidentImages:
    """Decoded uint8 images held on ``device`` in buckets of equal padded size."""

    def __init__(self, images: list[Tensor], targets: list[int], device: torch.device):
        keys = [bucket_key(img) for img in images]
        self.buckets: list[Tensor] = []
        where = [(0, 0)] * len(images)
        for b, key in enumerate(sorted(set(keys))):
            members = [i for i, k in enumerate(keys) if k == key]
            bucket = torch.empty(len(members), 3, *key, dtype=torch.uint8, device=device)
            for pos, i in enumerate(members):
                fill_padded(bucket[pos], images[i].to(device))
                where[i] = (b, pos)
            self.buckets.append(bucket)
        self.where = torch.tensor(where, dtype=torch.long, device=device)
        self.sizes = torch.tensor([img.shape[1:] for img in images], dtype=torch.long, device=device)
        self.targets = torch.tensor(targets, dtype=torch.long, device=device)

    def __len__(self) -> int:
        return len(self.targets)

    @staticmethod
    def bytes_needed(images: list[Tensor]) -> int:
        return sum(3 * math.prod(bucket_key(img)) for img in images)

    def crops(self, index: Tensor, boxes: Tensor, size: int) -> Tensor:
        """uint8 crops of the images ``index`` (a 1-D tensor on the device), one roi_align per bucket."""
        out = torch.empty(len(index), 3, size, size, dtype=torch.float32, device=self.targets.device)
        bucket_of, pos = self.where[index].unbind(1)
        for b in bucket_of.unique().tolist():
            chosen = (bucket_of == b).nonzero()[:, 0]
            source = self.buckets[b][pos[chosen]].float()
            out[chosen] = crop_resize(source, boxes[chosen], size)
        return out.round_().clamp_(0, 255).to(torch.uint8)


def fill_padded(slot: Tensor, img: Tensor) -> None:
    """Copy ``img`` into the top-left of ``slot`` and repeat its last row and column into
    the padding: roi_align's bilinear samples at the image's edge then read the edge pixel,
    as they would on the image alone, not a black border."""
    h, w = img.shape[1:]
    slot[:, :h, :w] = img
    slot[:, :h, w:] = img[:, :, w - 1:]
    slot[:, h:, :] = slot[:, h - 1:h, :]


def bucket_key(img: Tensor) -> tuple[int, int]:
    return tuple(-(-side // BUCKET_STEP) * BUCKET_STEP for side in img.shape[1:])


class DeviceBatches:
    """An epoch of training batches built on the device: what train.py iterates instead
    of a DataLoader (``len``, iteration, ``dataset`` for the image count and PCA basis)."""

    def __init__(self, dataset, resident: ResidentImages, batch_size: int, scale: tuple[float, float],
                 crop_size: int, drop_last: bool):
        self.dataset, self.resident, self.batch_size = dataset, resident, batch_size
        self.scale, self.crop_size, self.drop_last = scale, crop_size, drop_last
        self.generator = torch.Generator(device=resident.targets.device)
        self.skip = 0  # batches the next epoch starts after (a run resumed mid-epoch); they draw, unbuilt

    def __len__(self) -> int:
        n = len(self.resident)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        device = self.resident.targets.device
        order = torch.randperm(len(self.resident), generator=self.generator, device=device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start:start + self.batch_size]
            boxes = sample_boxes(self.resident.sizes[index], self.scale, CROP_RATIO, self.generator)
            flip = torch.rand(len(index), generator=self.generator, device=device) < 0.5
            if start < self.skip * self.batch_size:
                continue
            images = self.resident.crops(index, boxes, self.crop_size)
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
            yield images, self.resident.targets[index]


class DeviceTensorBatches:
    """The stored validation crops, on the device, in order, a batch at a time."""

    def __init__(self, dataset, device: torch.device, batch_size: int):
        self.dataset, self.batch_size = dataset, batch_size
        items = [dataset[i] for i in range(len(dataset))]  # a torchrun rank may have none
        self.images = torch.stack([img for img, _ in items]).to(device) if items else torch.empty(0, device=device)
        self.targets = torch.tensor([t for _, t in items], dtype=torch.long, device=device)

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.targets), self.batch_size):
            yield self.images[start:start + self.batch_size], self.targets[start:start + self.batch_size].cpu()

"""Where a CPU epoch's batch building can go, measured side by side in one process.

    python tools/batch_overlap.py --data /tmp/flowers3                 # a folder with train/
    python tools/batch_overlap.py --data DIR --batches 24 --rounds 3

Prints images/s, medians over --rounds (the variants alternate within each round):
  making batches of --batch-size from the cached training images: torchvision's per-image
    transforms (RandomResizedCrop + flip, each image under fork_rng with its own seed, as
    train.py drew its crops before commit f7fb8ce) against transforms.TrainAugment's one draw a batch;
  training steps (bench.train_step: train.py's step with the default recipe) on batches built
    in the main thread between steps (what train.py does), built ahead by a background thread
    (possible since the draws no longer touch the global generator), and on one fixed batch
    (the ceiling: the model step alone, on real pixels).
The allocator setting train.py makes (machine.keep_freed_memory) is on throughout.
docs/performance.md ("Where one default epoch goes") has this CPU's figures.
"""
import queue
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project folder: its scripts and alexnet/
import torch  # noqa: E402

import bench  # noqa: E402
from alexnet import transforms  # noqa: E402
from alexnet.datasets import CachedImageFolder  # noqa: E402
from alexnet import machine  # noqa: E402
from alexnet.errors import OneLineParser, require_counts, run_main  # noqa: E402
from model import AlexNet  # noqa: E402


def torchvision_per_image(dataset: CachedImageFolder, size: int, scale: tuple[float, float]):
    from torchvision.transforms import v2

    transform = v2.Compose([v2.RandomResizedCrop(size, scale=scale, antialias=True), v2.RandomHorizontalFlip()])
    return lambda keys: torch.stack([transforms.seeded(transform, dataset.images[i], seed) for i, seed in keys])


def per_batch(dataset: CachedImageFolder):
    return lambda keys: torch.stack([img for img, _ in dataset.__getitems__(keys)])


def rate(images: int, work) -> float:
    t0 = time.perf_counter()
    work()
    return images / (time.perf_counter() - t0)


def get_args_parser() -> OneLineParser:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a folder with train/ class folders")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=24, help="batches per measurement")
    p.add_argument("--rounds", type=int, default=3)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(measure, get_args_parser().parse_args(argv))


def measure(args) -> int:
    require_counts(args, "batch_size", "batches", "rounds")
    machine.keep_freed_memory()
    cfg = bench.default_config()
    dataset = bench.cached_training_images(Path(args.data), cfg)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
    batches = [[(i, 1000 + n) for n, i in enumerate(order[start:start + args.batch_size], start)]
               for start in range(0, args.batches * args.batch_size, args.batch_size)]
    images = sum(len(keys) for keys in batches)
    builders = {"torchvision, per image": torchvision_per_image(dataset, cfg.img_size, cfg.crop_scale),
                "TrainAugment, per batch": per_batch(dataset)}
    build = builders["TrainAugment, per batch"]
    device = torch.device("cpu")
    precision = machine.pick_precision("auto", device)
    step = bench.train_step(AlexNet(num_classes=len(set(dataset.targets))).to(memory_format=torch.channels_last),
                            device, precision)

    def ready(keys):
        return transforms.normalize(build(keys), cfg.mean, cfg.std), torch.tensor([dataset.targets[i] for i, _ in keys])

    def inline():
        for keys in batches:
            step(*ready(keys))

    def background():
        ahead: queue.Queue = queue.Queue(maxsize=2)

        def produce():
            for keys in batches:
                ahead.put(ready(keys))

        threading.Thread(target=produce, daemon=True).start()
        for _ in batches:
            step(*ahead.get())

    def fixed():
        batch = ready(batches[0])
        for _ in batches:
            step(*batch)

    runs = {**{f"making batches: {name}": (lambda b=b: [b(keys) for keys in batches]) for name, b in builders.items()},
            "steps, batches built between them": inline, "steps, batches built by a thread": background,
            "steps on one fixed batch": fixed}
    fixed()  # warm-up: kernels picked, memory mapped
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, work in runs.items():
            rates[name].append(rate(images, work))
    print(f"{machine.cpu_summary()}; {precision}, batch {args.batch_size}, {args.batches} batches, "
          f"{torch.get_num_threads()} threads, medians of {args.rounds}")
    for name, values in rates.items():
        print(f"  {name:40}{statistics.median(values):9.1f} images/s   {[round(v, 1) for v in values]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Synthetic photos of five shapes: the data behind ``python train.py --demo`` and bench.py.

    python -c "import shapes; shapes.make_shapes('data_set/demo_shapes')"

Each picture is a circle, cross, square, star or triangle of random colour, size,
position and rotation on a random gradient, with clutter lines, blur and noise. The
shape always stands out in brightness, as objects in photos do, so a small network
learns the task in minutes on a CPU, and nothing has to be downloaded.
"""
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "cross", "square", "star", "triangle")
# bump when the pictures change, so an old demo folder is drawn again
SHAPES_VERSION = "v2"


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(x * r * 0.75, y * r * 0.75) for x, y in ((1, 1), (-1, 1), (-1, -1), (1, -1))]
    elif shape == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    elif shape == "star":
        pts = [((r if k % 2 == 0 else r * 0.4) * math.cos(k * math.pi / 5),
                (r if k % 2 == 0 else r * 0.4) * math.sin(k * math.pi / 5)) for k in range(10)]
    else:  # cross
        a, b = r, r * 0.3
        pts = [(b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b), (-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def draw_shape(shape: str, size: int, rng: random.Random) -> Image.Image:
    """One ``size`` x ``size`` RGB picture of ``shape``."""
    light = rng.random() < 0.5

    def colour(lo: int, hi: int) -> tuple[int, int, int]:
        return tuple(rng.randrange(lo, hi) for _ in range(3))

    bg = (0, 110) if light else (145, 256)
    # a gradient at a random angle: rotate one twice the size and keep its middle, so no corner shows
    img = Image.linear_gradient("L").resize((2 * size, 2 * size)).rotate(rng.uniform(0, 360))
    img = img.crop((size // 2, size // 2, size // 2 + size, size // 2 + size))
    img = Image.composite(Image.new("RGB", (size, size), colour(*bg)), Image.new("RGB", (size, size), colour(*bg)), img)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randrange(3)):  # distractor lines
        draw.line([(rng.uniform(0, size), rng.uniform(0, size)) for _ in range(2)], fill=colour(0, 256),
                  width=max(1, size // 64))
    r = rng.uniform(0.22, 0.4) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    fill = colour(*((150, 256) if light else (0, 105)))
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.0)))
    noise = Image.effect_noise((size, size), rng.uniform(5, 25)).convert("RGB")
    return Image.blend(img, noise, 0.1)


def make_shapes(root: str | Path, train_per_class: int = 200, val_per_class: int = 50, size: int = 128,
                seed: int = 0, photo_sides: tuple[int, int] | None = None) -> str:
    """Write a 5-class ImageFolder to ``root/{train,val}/<shape>/*.jpg``.

    ``photo_sides=(lo, hi)`` stretches each picture to a random width and height in that
    range, as real photos vary (bench.py). A complete folder (its ``.done`` marker matches
    the arguments) is kept as it is, so the demo data is drawn once.
    """
    marker = Path(root) / ".done"
    spec = f"{SHAPES_VERSION} {train_per_class} {val_per_class} {size} {seed} {photo_sides}"
    if marker.is_file() and marker.read_text() == spec:
        return str(root)
    rng = random.Random(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for shape in SHAPES:
            folder = Path(root) / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = draw_shape(shape, size, rng)
                if photo_sides:
                    img = img.resize((rng.randint(*photo_sides), rng.randint(*photo_sides)))
                img.save(folder / f"{shape}_{i:04d}.jpg", quality=90)
    marker.write_text(spec)
    return str(root)

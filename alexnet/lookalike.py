"""Copies of a photo that are not byte for byte the same (resized, recompressed): a 64-bit
perceptual hash of each image, and the pairs and groups of images whose hashes are close.
Used by data_set/check.py (copies within and across classes and splits),
data_set/split_data.py (copies kept on one side of the split) and train.py (validation photos
that copy training photos, for its diagnosis)."""
import functools
import hashlib
import os
from collections import defaultdict

import numpy as np
from PIL import Image

from alexnet import folders, images
from alexnet.errors import DataError

HASH_SIDE, HASH_BITS = 32, 8  # pHash: a 32 x 32 grey copy, its 8 x 8 lowest frequencies
LOOK_LIMIT = 20_000  # train.py looks for copies across the splits up to this many photos (about 12 s on 2 cores)
DISTANCE = 4  # pHash bits two near-duplicates may differ in (resized copies: 0-2)
# train.py's stricter limit across the splits: simple synthetic pictures (the demo shapes) differ in 3-4 bits
# without being copies; resized photos stay within 2 (measured: docs/diagnosis.md)
COPY_DISTANCE = 2
FLAT = 1.0  # grey levels of standard deviation below which an image has no look to hash


def phash(img: Image.Image) -> int | None:
    """imagehash.phash(img) as an int: the 64 signs, row by row, of the 8 x 8 lowest DCT
    frequencies of a 32 x 32 grey copy (LANCZOS), above their median. None for a flat image
    (one grey level, give or take one): its signs are noise, and every such image would look
    like every other."""
    import imagehash

    grey = img.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.LANCZOS)  # what imagehash hashes
    if np.asarray(grey, dtype=np.float64).std() < FLAT:
        return None
    return int(str(imagehash.phash(grey, hash_size=HASH_BITS)), 16)


def look(path: str, draft: bool = False) -> int | None:
    """The image's pHash alone, or None if it is unreadable or flat. ``draft`` (train.py's
    start): a JPEG is decoded at the smallest of its 1/2 .. 1/8 scales that keeps 64 px
    (Pillow's draft mode, several times faster); the hash moves by a fraction of a bit on
    average, far within DISTANCE."""
    try:
        with images.open_image(path) as img:
            if draft and img.format == "JPEG":
                img.draft("RGB", (2 * HASH_SIDE, 2 * HASH_SIDE))
            return phash(images.upright_rgb(img, path))
    except (DataError, OSError):
        return None


def copied_across(train: list[str], val: list[str]) -> set[int]:
    """The indices of the ``val`` photos within COPY_DISTANCE bits of some ``train`` photo."""
    looks = [look(p, draft=True) for p in [*train, *val]]
    known = [i for i, h in enumerate(looks) if h is not None]
    pairs = near_pairs([looks[i] for i in known], COPY_DISTANCE)
    first_val = len(train)
    return {max(known[a], known[b]) - first_val for a, b, _ in pairs
            if min(known[a], known[b]) < first_val <= max(known[a], known[b])}


def near_pairs(hashes: list[int], distance: int) -> list[tuple[int, int, int]]:
    """(i, j, Hamming distance) of every pair within ``distance``, found without comparing all
    pairs: two hashes that differ in at most d bits agree exactly on at least one of d + 1
    slices of them (the pigeonhole principle), so only hashes sharing a slice are compared."""
    parts = distance + 1
    edges = [round(64 * k / parts) for k in range(parts + 1)]
    pairs = set()
    for k in range(parts):
        buckets = defaultdict(list)
        mask = (1 << (edges[k + 1] - edges[k])) - 1
        for i, h in enumerate(hashes):
            buckets[(h >> edges[k]) & mask].append(i)
        for members in buckets.values():
            for a in range(len(members)):
                for b in range(a + 1, len(members)):
                    i, j = members[a], members[b]
                    d = bin(hashes[i] ^ hashes[j]).count("1")
                    if d <= distance:
                        pairs.add((i, j, d))
    return sorted(pairs)


def groups_of(pairs: list[tuple[int, int, int]], n: int) -> list[list[int]]:
    """Connected groups (union-find) of the images the pairs join, each sorted, largest first."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[root(i)] = root(j)
    members = defaultdict(list)
    for i in sorted({i for p in pairs for i in p[:2]}):
        members[root(i)].append(i)
    return sorted(members.values(), key=lambda g: (-len(g), g))


def copies_across(train: list[tuple[str, int]], val: list[tuple[str, int]]) -> tuple[int, list[str]]:
    """How many validation images copy training images, and a warning if any do: byte for
    byte (only files of the same size are read and hashed, each once), or resized and
    recompressed (perceptual hashes, up to LOOK_LIMIT photos: a few seconds)."""
    @functools.cache
    def digest(path: str) -> str:
        with open(path, "rb") as f:
            return hashlib.sha1(f.read()).hexdigest()

    try:
        by_size: dict[int, list[str]] = {}
        for path, _ in train:
            by_size.setdefault(os.path.getsize(path), []).append(path)
        pairs = []
        for path, _ in val:
            candidates = by_size.get(os.path.getsize(path), [])
            if candidates:
                mine = digest(path)
                pairs += [(path, other) for other in candidates if digest(other) == mine]
    except OSError:  # a file that vanished: the data pipeline reports it in its own words
        return 0, []
    exact = {path for path, _ in pairs}
    near = set()
    if len(train) + len(val) <= LOOK_LIMIT:
        near = {val[i][0] for i in copied_across([p for p, _ in train], [p for p, _ in val])} - exact
    notes = []
    if pairs:
        notes.append(f"warning: {len(exact)} validation image(s) are byte-for-byte copies of training images (e.g. "
                     f"{folders.printable(pairs[0][0])} = {folders.printable(pairs[0][1])}): validation partly "
                     f"measures memory; python data_set/check.py DATA lists them")
    if near:
        notes.append(f"warning: {len(near)} validation image(s) look like resized or recompressed copies of training "
                     f"images (e.g. {folders.printable(min(near))}): validation partly measures memory; python "
                     f"data_set/check.py DATA lists them")
    return len(exact | near), notes

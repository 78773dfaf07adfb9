"""Finding the images in a folder tree, the same way in every tool.

train.py, evaluate.py, predict.py and data_set/split_data.py all read folders through
``list_images``: recursive, sorted as torchvision's ``ImageFolder`` sorts, hidden files
and folders ignored, links followed but each real folder and file read once (a link
back up the tree cannot loop, a second link to the same photo does not count it twice),
and every other file counted by extension so the tools can say what they left out.

It imports nothing beyond the standard library, so the split tool starts at once.
torchvision's ImageFolder is not used for the walk because it follows a link cycle
forever and says nothing about the files it skips (tests/test_folders.py checks that
both list the same files on an ordinary tree).
"""
import os
from collections import Counter
from dataclasses import dataclass, field

from errors import DataError  # also registers the 'escape-bytes' error handler printable() uses

# torchvision.datasets.folder.IMG_EXTENSIONS
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def is_image_file(path: str) -> bool:
    name = os.path.basename(path)
    return not is_hidden(name) and name.lower().endswith(IMG_EXTENSIONS)


@dataclass
class Listing:
    """Image files found under a folder, and what was passed over."""
    files: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # extension (as written) -> count
    duplicates: int = 0  # links to a file already listed

    def add(self, other: "Listing") -> None:
        self.files += other.files
        self.skipped += other.skipped
        self.duplicates += other.duplicates


def list_images(folder: str, seen: set | None = None) -> Listing:
    """Every image file under ``folder`` (recursively), in ImageFolder's order.

    ``seen`` holds the (device, inode) of files already listed elsewhere, so one file
    reached through two links is listed once across calls.
    """
    seen = set() if seen is None else seen
    listing = Listing()
    found: list[tuple[str, list[str]]] = []
    _walk(folder, os.path.realpath(folder), set(), found, listing)
    for path, names in sorted(found):  # as ImageFolder: sorted(os.walk(...)), then sorted(names)
        for name in sorted(names):
            full = os.path.join(path, name)
            try:
                st = os.stat(full)
            except OSError:  # a dangling link
                listing.skipped["(broken link)"] += 1
                continue
            if (st.st_dev, st.st_ino) in seen:
                listing.duplicates += 1
                continue
            seen.add((st.st_dev, st.st_ino))
            listing.files.append(full)
    return listing


def _walk(path: str, top: str, visited: set, found: list[tuple[str, list[str]]], listing: Listing) -> None:
    """Collect (folder, image names) below ``path``, entering each real folder once and
    never a link to ``top`` (the real path of the scanned folder) or above it."""
    try:
        st = os.stat(path)
        entries = list(os.scandir(path))
    except OSError:
        return
    if (st.st_dev, st.st_ino) in visited:  # a second way into a folder already read
        return
    visited.add((st.st_dev, st.st_ino))
    names = []
    for e in entries:
        if is_hidden(e.name):
            continue
        try:
            is_dir = e.is_dir()  # follows links
            is_file = not is_dir and e.is_file()
        except OSError:
            is_dir = is_file = False
        if is_dir and e.is_symlink() and _is_ancestor(os.path.realpath(e.path), top):
            listing.skipped["(link back up the tree)"] += 1
        elif is_dir:
            _walk(e.path, top, visited, found, listing)
        elif is_file and e.name.lower().endswith(IMG_EXTENSIONS):
            names.append(e.name)
        elif is_file:
            listing.skipped[os.path.splitext(e.name)[1] or "(no extension)"] += 1
        elif e.is_symlink():
            listing.skipped["(broken link)"] += 1
    found.append((path, names))


def _is_ancestor(folder: str, of: str) -> bool:
    return of == folder or of.startswith(folder.rstrip(os.sep) + os.sep)


def describe_skipped(listing: Listing) -> str:
    """'skipped 11 files: 9 .HEIC, 2 .txt', or '' when nothing was skipped."""
    parts = [f"{n} {ext}" for ext, n in sorted(listing.skipped.items(), key=lambda kv: (-kv[1], kv[0]))]
    if listing.duplicates:
        parts.append(f"{listing.duplicates} second link(s) to the same image")
    total = sum(listing.skipped.values()) + listing.duplicates
    return f"skipped {total} file{'s' if total != 1 else ''}: {', '.join(parts)}" if total else ""


def find_classes(root: str) -> list[str]:
    """Class folders of an ImageFolder root (links to folders count), hidden ones skipped."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: data folder not found")
    try:
        entries = list(os.scandir(root))
    except OSError as e:
        raise DataError(f"{root}: cannot read this folder ({e.strerror or e})") from None
    classes = sorted(e.name for e in entries if not is_hidden(e.name) and e.is_dir())
    if not classes:
        raise DataError(f"{root}: no class folders inside (expected {root}/<class>/<image>.jpg)")
    return classes


def class_samples(root: str, classes: list[str]) -> tuple[list[tuple[str, int]], Listing]:
    """(path, class index) for every image of every class folder, and what was skipped.
    A class folder without images is an error naming it."""
    samples, total, seen = [], Listing(), set()
    for index, name in enumerate(classes):
        listing = list_images(os.path.join(root, name), seen)
        if not listing.files:
            raise DataError(f"{os.path.join(root, name)}: class folder has no images ({', '.join(IMG_EXTENSIONS)})")
        samples += [(f, index) for f in listing.files]
        total.add(listing)
    return samples, total


def printable(name: str) -> str:
    """A file name that may hold bytes that are not UTF-8 (Linux allows any), with those
    bytes as \\x escapes, so it can be printed, drawn in a figure or written to a CSV."""
    return name.encode("utf-8", "escape-bytes").decode("utf-8")

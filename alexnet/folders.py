"""Finding the images in a folder tree, the same way in every tool.

train.py, evaluate.py, predict.py and data_set/split_data.py all read folders through
``list_images``: recursive, sorted as torchvision's ``ImageFolder`` sorts, hidden files
and folders ignored, links followed but each real folder and file read once (a link
back up the tree cannot loop, a second link to the same photo does not count it twice),
and every other file counted by extension so the tools can say what they left out.

It imports nothing beyond the standard library, so the split tool starts at once.
torchvision's ImageFolder is not used for the walk because it follows a link cycle
forever and says nothing about the files it skips (tests/test_inputs.py checks that
both list the same files on an ordinary tree).
"""
import os
import stat
import sys
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass, field

from alexnet.errors import DataError, UserError  # also registers the 'escape-bytes' error handler printable() uses

# torchvision.datasets.folder.IMG_EXTENSIONS, and AVIF (Pillow 11.2 on reads it; an older one reports
# each such file as unreadable, by name); .jfif and .jpe (what Windows browsers save JPEGs as), GIF and
# ICO (their first frame, the largest icon), HEIC/HEIF (pillow-heif): every tool lists the same files
IMG_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
                  ".avif", ".gif", ".ico", ".heic", ".heif")
# photo formats no decoder here reads: the listing says so, not just "skipped"
NO_DECODER = {".jxl": "JPEG XL", ".cr2": "camera raw", ".nef": "camera raw", ".dng": "camera raw",
              ".arw": "camera raw", ".svg": "SVG (vector)"}


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
    first_duplicate_of: str = ""  # the folder the first such file was listed under
    examples: dict = field(default_factory=dict)  # NO_DECODER extension -> the first such file

    def add(self, other: "Listing") -> None:
        self.files += other.files
        self.skipped += other.skipped
        self.duplicates += other.duplicates
        self.examples = other.examples | self.examples


def list_images(folder: str, seen: dict | None = None) -> Listing:
    """Every image file under ``folder`` (recursively), in ImageFolder's order.

    ``seen`` maps the (device, inode) of files already listed elsewhere to the folder
    they were listed under, so one file reached through two links is listed once across calls.
    """
    seen = {} if seen is None else seen
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
                listing.first_duplicate_of = listing.first_duplicate_of or seen[st.st_dev, st.st_ino]
                continue
            seen[st.st_dev, st.st_ino] = folder
            listing.files.append(full)
    return listing


def images_of(folder: str, option: str, error: type[UserError] = DataError) -> list[str]:
    """The image files of a folder an option names (``--ood``, ``--calibration``): one line
    when it is no folder or holds no image."""
    if not os.path.isdir(folder):
        raise error(f"{option} {folder}: folder not found")
    files = list_images(folder).files
    if not files:
        raise error(f"{option} {folder}: no images inside ({', '.join(IMG_EXTENSIONS)})")
    return files


def spread(files: list[str], count: int) -> list[str]:
    """At most ``count`` of ``files``, evenly spaced over them (every class of a sorted tree)."""
    return files[::max(1, len(files) // count)][:count]


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
            ext = os.path.splitext(e.name)[1]
            listing.skipped[ext or "(no extension)"] += 1
            if ext.lower() in NO_DECODER:
                listing.examples.setdefault(ext.lower(), e.path)
        elif _exists(e.path):  # a named pipe, a socket or a device: reading one can block or never end
            listing.skipped["(not a regular file)"] += 1
        elif e.is_symlink():
            listing.skipped["(broken link)"] += 1
    found.append((path, names))


def _exists(path: str) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _is_ancestor(folder: str, of: str) -> bool:
    return of == folder or of.startswith(folder.rstrip(os.sep) + os.sep)


def describe_skipped(listing: Listing) -> str:
    """'skipped 11 files: 9 .jxl (JPEG XL images no decoder here reads, such as a/b.jxl: convert
    them to JPEG or PNG), 2 .txt', or '' when nothing was skipped."""
    def note(ext: str) -> str:
        if ext.lower() not in NO_DECODER:
            return ""
        example = listing.examples.get(ext.lower())
        return (f" ({NO_DECODER[ext.lower()]} images no decoder here reads"
                + (f", such as {printable(example)}" if example else "") + ": convert them to JPEG or PNG)")

    parts = [f"{n} {ext}{note(ext)}" for ext, n in sorted(listing.skipped.items(), key=lambda kv: (-kv[1], kv[0]))]
    if listing.duplicates:
        parts.append(f"{listing.duplicates} second name(s) of an image already listed (given twice, or a link)")
    total = sum(listing.skipped.values()) + listing.duplicates
    return f"skipped {total} file{'s' if total != 1 else ''}: {', '.join(parts)}" if total else ""


# what a class folder turns into when it is zipped, or never unpacked
ARCHIVES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar")


def find_classes(root: str, log=None) -> list[str]:
    """Class folders of an ImageFolder root (links to folders count). Hidden ones (a name
    starting with a dot) are never classes; ``log`` is told which were left out. Where a class
    folder may have been meant (an archive, a file without extension, an image outside any
    class, a link to nothing), or a name this Python cannot decode, one line names it."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: data folder not found")
    try:
        entries = list(os.scandir(root))
    except OSError as e:
        raise DataError(f"{root}: cannot read this folder ({e.strerror or e})") from None
    dirs = [e for e in entries if _is_dir(e)]
    classes = sorted(e.name for e in dirs if not is_hidden(e.name))
    hidden = sorted(e.name for e in dirs if is_hidden(e.name))
    if hidden and log is not None:
        log(f"{root}: left out {len(hidden)} hidden folder(s), never classes: {printable(', '.join(hidden))}")
    check_class_level(root, [e for e in entries if not _is_dir(e) and not is_hidden(e.name)], log)
    for name in classes:
        check_decodable(os.path.join(root, name))
    check_lookalike_names(root, classes)
    if not classes:
        raise DataError(f"{root}: no class folders inside (expected {root}/<class>/<image>.jpg)")
    return classes


def check_class_level(root: str, others: list[os.DirEntry], log) -> None:
    """Files beside the class folders: an archive, a file without extension, an image or a
    broken link is an error naming it (a class the user meant would be missing); anything else
    (LICENSE.txt, notes) is named in one log line."""
    for e in sorted(others, key=lambda e: e.name):
        path, ext = os.path.join(root, e.name), os.path.splitext(e.name)[1].lower()
        if e.is_symlink() and not _exists(e.path):
            raise DataError(f"{printable(path)}: a link to {printable(os.readlink(path))}, which does not exist, where "
                            f"a class folder belongs; fix or remove the link")
        if ext in ARCHIVES or e.name.lower().endswith(".tar.gz"):
            raise DataError(f"{printable(path)}: an archive where class folders belong; unpack it into a folder "
                            f"(its name is the class), or move it away")
        if not ext:
            raise DataError(f"{printable(path)}: a file, not a folder, where class folders belong; a class must be "
                            f"a folder of images: fix or move it away")
        if ext in IMG_EXTENSIONS:
            raise DataError(f"{printable(path)}: an image outside any class folder; move it into its class "
                            f"folder ({printable(root)}/<class>/), or away")
    if others and log is not None:  # a dangling link among them was an error above
        log(f"{root}: left out {len(others)} file(s) that are no class folders: "
            f"{printable(', '.join(sorted(e.name for e in others)))}")


def name_key(name: str) -> str:
    """What a reader sees of a name: Unicode compatibility form (NFC and NFD alike), no
    invisible format characters (zero-width spaces and joiners), case folded."""
    return "".join(c for c in unicodedata.normalize("NFKC", name) if unicodedata.category(c) != "Cf").casefold()


def check_lookalike_names(root: str, classes: list[str]) -> None:
    """Two class folders whose names look the same would train as two classes that no one can
    tell apart, and be split apart by split_data.py: one line names both."""
    seen: dict[str, str] = {}
    for name in classes:
        other = seen.setdefault(name_key(name), name)
        if other != name:
            raise DataError(f"{printable(os.path.join(root, other))} and {printable(os.path.join(root, name))}: two "
                            f"class folders whose names look the same ({ascii(other)} and {ascii(name)}: they differ "
                            f"only in case, Unicode form or an invisible character); merge them or rename one")


def separate_splits(data: str, splits: tuple[str, ...] = ("train", "val", "test")) -> None:
    """Splits that are one folder (a link, or the same folder named twice), or that share a class
    folder, would score the training photos as if unseen; one line says so and how to split."""
    present = [os.path.join(data, s) for s in splits if os.path.isdir(os.path.join(data, s))]
    for i, first in enumerate(present):
        for second in present[i + 1:]:
            shared = [second] if os.path.samefile(first, second) else \
                [os.path.join(second, c.name) for c in os.scandir(second) if _is_dir(c) and
                 os.path.isdir(os.path.join(first, c.name)) and os.path.samefile(c.path, os.path.join(first, c.name))]
            if shared:
                raise DataError(f"{printable(shared[0])}: is the same folder as {printable(first)}"
                                f"{shared[0][len(second):]} (a link, or one folder named twice), so it would score "
                                f"photos the model trained on. Make a split into a new folder: python "
                                f"data_set/split_data.py {printable(first)} --dest NEW_FOLDER")


def check_decodable(path: str) -> None:
    """Under a locale that is not UTF-8 (LC_ALL=C with PYTHONUTF8=0) Python reads a UTF-8 name
    such as 玫瑰 as escaped bytes; stored as a class name, it would be garbage everywhere."""
    name = os.path.basename(path)
    if sys.getfilesystemencoding().lower().replace("-", "") == "utf8" or name.isascii():
        return
    try:
        real = name.encode(sys.getfilesystemencoding(), "surrogateescape").decode("utf-8")
    except UnicodeDecodeError:
        return  # not UTF-8 on disk either: kept byte for byte, printed with \x escapes
    raise DataError(f"{printable(path)}: the class name {real!r} cannot be read under this locale "
                    f"({sys.getfilesystemencoding()}); run with PYTHONUTF8=1 or a UTF-8 locale (LC_ALL=C.UTF-8)")


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def class_samples(root: str, classes: list[str]) -> tuple[list[tuple[str, int]], Listing]:
    """(path, class index) for every image of every class folder, and what was skipped.
    A class folder without images is an error naming it."""
    samples, total, seen = [], Listing(), {}
    for index, name in enumerate(classes):
        listing = list_images(os.path.join(root, name), seen)
        if not listing.files and listing.duplicates:
            raise DataError(f"{os.path.join(root, name)}: holds the same image files as {listing.first_duplicate_of} "
                            f"(a link to it?); an image can belong to one class only")
        if not listing.files:
            raise DataError(f"{os.path.join(root, name)}: class folder has no images ({', '.join(IMG_EXTENSIONS)})")
        samples += [(f, index) for f in listing.files]
        total.add(listing)
    return samples, total


def printable(name: str) -> str:
    """A file name that may hold bytes that are not UTF-8 (Linux allows any), with those
    bytes as \\x escapes, and control characters (a newline in a folder name) as \\n, \\t or
    \\x1b, so it can be printed on one line, drawn in a figure or written to a CSV."""
    text = name.encode("utf-8", "escape-bytes").decode("utf-8")
    return text if text.isprintable() else "".join(c if c.isprintable() or unicodedata.category(c) != "Cc"
                                                  else ascii(c)[1:-1] for c in text)


def width(text: str) -> int:
    """Console columns ``text`` takes: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in printable(text))


def column(text: str, columns: int) -> str:
    """``text`` padded with spaces to ``columns`` console columns (Chinese names line up too)."""
    return printable(text) + " " * max(0, columns - width(text))


# ---------------------------------------------------------------- single files the user names
def check_file(path: str | os.PathLike, what: str, error: type[UserError] = DataError, max_bytes: int = 0) -> int:
    """The size of ``path`` if it is a regular file (links followed) of at most ``max_bytes``
    (0: any size); else ``error`` naming the file. Checked before anything reads it: a named
    pipe blocks a reader for ever, a link to /dev/zero never ends."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read this {what} ({e.strerror or e})") from None
    a = "an" if what[0] in "aeiou" else "a"
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a folder, not {a} {what} file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: is {_special_kind(st.st_mode)}, not a regular file; {a} {what} must be a file")
    if max_bytes and st.st_size > max_bytes:
        raise error(f"{path}: {st.st_size / 2**20:,.0f} MiB is over the {max_bytes / 2**20:,.0f} MiB {a} {what} "
                    f"can have here; not read")
    return st.st_size


def _special_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


# the first bytes of the kinds of file the tools read and write
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
          (b"%PDF", "a PDF document"), (b"<?xml", "an XML or SVG file"), (b"<svg", "an SVG image"))


def describe_contents(path: str | os.PathLike) -> str:
    """What a regular file holds, from its first bytes: 'a PyTorch checkpoint', 'a JPEG
    image', 'an ONNX model', 'text', ... (the tools tell "not a checkpoint at all" apart
    from "refused for safety", and never write one kind of file over another)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                torch_zip = any(n.endswith("/data.pkl") for n in z.namelist())
        except (zipfile.BadZipFile, OSError):
            return "a damaged ZIP archive"
        return "a PyTorch checkpoint" if torch_zip else "a ZIP archive"
    if head[0] == 0x80 and len(head) > 1 and head[1] <= 5:
        return "a PyTorch checkpoint (legacy format)"  # a pickle, as torch.save wrote before PyTorch 1.6
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image"
    kind = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
    if kind:
        return kind
    if len(head) > 2 and head[0] == 0x08 and head[1] < 0x80 and head[2] in (0x12, 0x1A, 0x22, 0x2A, 0x3A, 0x42):
        return "an ONNX model"  # protobuf: a small ir_version, then one of ModelProto's text or graph fields
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown kind"
    return "text"

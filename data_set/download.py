"""Download the TensorFlow flower_photos set, check its SHA-256, unpack and split it.

    python data_set/download.py          # -> data_set/flower_photos/ and data_set/flower_data/{train,val}

The archive (218 MiB) is fetched to ``flower_photos.tgz.part`` and renamed only once its
SHA-256 matches, so an interrupted download never looks complete; a complete archive
already present is reused. Unpacking refuses members that would land outside the folder.
"""
import hashlib
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project folder: its scripts and alexnet/

from alexnet.errors import OneLineParser, UserError  # noqa: E402
from alexnet.splitting import split  # noqa: E402

URL = "http://download.tensorflow.org/example_images/flower_photos.tgz"
SHA256 = "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c"


class DownloadError(UserError):
    """The archive could not be fetched, or is not the one expected."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest: Path, expected: str, quiet: bool = False) -> Path:
    if dest.is_file() and sha256(dest) == expected:
        return dest
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0)
            from tqdm import tqdm
            with tqdm(total=total or None, unit="B", unit_scale=True, desc=dest.name, disable=quiet) as bar:
                for chunk in iter(lambda: r.read(1 << 20), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
    except OSError as e:
        raise DownloadError(f"{url}: download failed ({e})") from None
    got = sha256(part)
    if got != expected:
        part.unlink()
        raise DownloadError(f"{url}: SHA-256 mismatch (got {got}, expected {expected}); the file was discarded")
    part.replace(dest)
    return dest


def unpack(archive: Path, into: Path) -> None:
    root = into.resolve()
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            target = (into / m.name).resolve()
            if not target.is_relative_to(root) or m.issym() or m.islnk() or m.isdev():
                raise DownloadError(f"{archive}: unsafe member {m.name!r}; not unpacking")
        tar.extractall(into)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=URL)
    p.add_argument("--sha256", default=SHA256, help="expected SHA-256 of the archive")
    p.add_argument("--dir", default=str(HERE), help="where the archive and flower_photos/ go")
    p.add_argument("--dest", default=None, help="split output (default DIR/flower_data)")
    p.add_argument("--test", type=float, default=0.0, metavar="FRACTION",
                   help="also hold out this share of each class as test/ (default 0: train/val 9:1)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    folder = Path(args.dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        archive = fetch(args.url, folder / "flower_photos.tgz", args.sha256, args.quiet)
        photos = folder / "flower_photos"
        if not photos.is_dir():
            tmp = folder / "flower_photos.unpacking"
            if tmp.exists():
                shutil.rmtree(tmp)  # our own half-unpacked folder from an interrupted run
            tmp.mkdir()
            unpack(archive, tmp)
            (tmp / "flower_photos").replace(photos)
            tmp.rmdir()
        split(photos, Path(args.dest) if args.dest else folder / "flower_data", quiet=args.quiet,
              test_ratio=args.test)
    except (UserError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Download the TensorFlow flower_photos set, check its SHA-256, unpack and split it.

    python data_set/download.py          # -> data_set/flower_photos/ and data_set/flower_data/{train,val}

The archive (218 MiB) is fetched by torch.hub.download_url_to_file into a temporary file
beside it and moved into place only once its SHA-256 matches, so an interrupted download
never looks complete; a complete archive already present is reused. Unpacking uses
tarfile's "data" filter, which refuses members that would land outside the folder, links
out of it and device files.
"""
import hashlib
import re
import shutil
import sys
import tarfile
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
    """Of an archive already there (hashlib.file_digest needs Python 3.11)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest: Path, expected: str, quiet: bool = False) -> Path:
    from torch.hub import download_url_to_file

    if dest.is_file() and sha256(dest) == expected:
        return dest
    try:
        download_url_to_file(url, str(dest), hash_prefix=expected, progress=not quiet)
    except OSError as e:
        raise DownloadError(f"{url}: download failed ({e})") from None
    except RuntimeError as e:  # torch.hub's words for a hash that does not match
        got = re.search(r'got "([0-9a-f]+)"', str(e))
        raise DownloadError(f"{url}: SHA-256 mismatch (got {got.group(1) if got else '?'}, expected {expected}); "
                            f"the file was discarded") from None
    return dest


def unpack(archive: Path, into: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    except tarfile.TarError as e:  # FilterError among them: a member that would land outside
        raise DownloadError(f"{archive}: unsafe or damaged archive ({e}); not unpacking") from None


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

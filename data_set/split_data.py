"""Split raw ``<class>/<image>`` folders into ``train/``, ``val/`` and optionally ``test/`` (ImageFolder layout).

    python data_set/split_data.py                                  # data_set/flower_photos -> data_set/flower_data
    python data_set/split_data.py --test 0.1                       # 8:1:1, a test split train.py never reads
    python data_set/split_data.py ~/my_photos --dest data_set/my_data --val-ratio 0.2

Each class sends ``floor(n * val_ratio)`` images to val (at least one), drawn with
``random.Random(seed)`` from the sorted file list, classes in sorted order, so every
machine gets the same split (3306 train / 364 val on the full 3670-image flower_photos).
With ``--test FRACTION``, ``floor(n * FRACTION)`` (at least one) of the rest go to test, drawn
after val, so val is the same with or without a test split. train.py picks its model on val
and never reads test; evaluate.py scores test when there is one. Near-duplicates (a photo and
its resized or recompressed copy: a perceptual hash, alexnet/lookalike.py) are kept on one side: they are
drawn as a group.
Images in sub-folders of a class belong to it, as train.py reads them; links are followed
once. Files are copied (or hard-linked with --link); nothing is ever deleted, and an
existing train/ or val/ is left alone: the tool refuses instead.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project folder: its scripts and alexnet/

from alexnet.errors import OneLineParser, UserError, printable_console  # noqa: E402
from alexnet.splitting import split  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    printable_console()
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("src", nargs="?", default=str(HERE / "flower_photos"), help="folder of <class>/<image> folders")
    p.add_argument("--dest", default=str(HERE / "flower_data"), help="where train/ and val/ are created")
    p.add_argument("--val-ratio", type=float, default=0.1)
    p.add_argument("--test", type=float, default=0.0, metavar="FRACTION",
                   help="also hold out this share of each class as test/ (default 0: the tutorial's train/val)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--link", action="store_true", help="hard-link instead of copying (same disk only)")
    args = p.parse_args(argv)
    try:
        split(Path(args.src), Path(args.dest), args.val_ratio, args.seed, args.link, test_ratio=args.test)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or args.dest}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

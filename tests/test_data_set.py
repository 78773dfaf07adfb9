"""data_set/ tools: the deterministic split and the verified download (from a local server)."""
import hashlib
import http.server
import io
import sys
import tarfile
import threading
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT

sys.path.insert(0, str(ROOT / "data_set"))
import download  # noqa: E402
import split_data  # noqa: E402


def make_raw(root: Path, counts: dict[str, int]) -> Path:
    for c, n in counts.items():
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(root / c / f"{i:03d}.jpg")
    (root / "LICENSE.txt").write_text("CC-BY")
    (root / "daisy" / ".DS_Store").write_bytes(b"\0")
    return root


def test_split_takes_a_tenth_of_each_class_deterministically(tmp_path):
    # the full flower_photos counts, in miniature ratios: floor(10%) per class
    raw = make_raw(tmp_path / "raw", {"daisy": 23, "roses": 19, "tulips": 10})
    counts = split_data.split(raw, tmp_path / "a", quiet=True)  # LICENSE.txt and .DS_Store are no classes
    assert counts == {"train": 23 - 2 + 19 - 1 + 10 - 1, "val": 2 + 1 + 1}
    split_data.split(raw, tmp_path / "b", quiet=True)
    listing = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*.jpg"))  # noqa: E731
    assert listing(tmp_path / "a") == listing(tmp_path / "b")
    assert not list((tmp_path / "a").rglob(".DS_Store"))
    assert sorted(p.name for p in (tmp_path / "a" / "val").iterdir()) == ["daisy", "roses", "tulips"]


def test_full_flower_counts_give_3306_and_364():
    counts = {"daisy": 633, "dandelion": 898, "roses": 641, "sunflowers": 699, "tulips": 799}
    assert sum(int(n * 0.1) for n in counts.values()) == 364
    assert sum(counts.values()) - 364 == 3306


def test_split_refuses_to_touch_an_existing_split(tmp_path, capsys):
    raw = make_raw(tmp_path / "raw", {"daisy": 5})
    (tmp_path / "out" / "train").mkdir(parents=True)
    keep = tmp_path / "out" / "train" / "mine.txt"
    keep.write_text("precious")
    assert split_data.main([str(raw), "--dest", str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert keep.read_text() == "precious"


def test_split_of_a_missing_folder_is_one_line(tmp_path, capsys):
    assert split_data.main([str(tmp_path / "none"), "--dest", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'none'}: source folder not found"


@pytest.fixture()
def served_archive(tmp_path):
    """flower_photos.tgz built here and served on 127.0.0.1: no test touches the internet."""
    raw = make_raw(tmp_path / "build" / "flower_photos", {"daisy": 10, "tulips": 20})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(raw, arcname="flower_photos")
    site = tmp_path / "site"
    site.mkdir()
    (site / "flower_photos.tgz").write_bytes(buf.getvalue())
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(site))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/flower_photos.tgz", hashlib.sha256(buf.getvalue()).hexdigest()
    server.shutdown()


def test_download_verifies_unpacks_and_splits(served_archive, tmp_path):
    url, digest = served_archive
    assert download.main(["--url", url, "--sha256", digest, "--dir", str(tmp_path / "ds"), "--quiet"]) == 0
    assert len(list((tmp_path / "ds" / "flower_photos").rglob("*.jpg"))) == 30
    assert len(list((tmp_path / "ds" / "flower_data" / "val").rglob("*.jpg"))) == 1 + 2
    assert not list((tmp_path / "ds").glob("*.part"))


def test_download_with_a_wrong_checksum_keeps_nothing(served_archive, tmp_path, capsys):
    url, _ = served_archive
    assert download.main(["--url", url, "--sha256", "0" * 64, "--dir", str(tmp_path / "ds"), "--quiet"]) == 2
    assert "SHA-256 mismatch" in capsys.readouterr().err
    assert not list((tmp_path / "ds").iterdir())


@pytest.mark.parametrize("name, link", [("../outside.jpg", None),
                                        ("flower_photos/daisy/link.jpg", "../../../../outside.jpg")])
def test_unpack_refuses_members_that_land_outside_and_writes_nothing_there(tmp_path, name, link):
    archive = tmp_path / "evil.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        member = tarfile.TarInfo(name)
        if link:
            member.type, member.linkname = tarfile.SYMTYPE, link
            tar.addfile(member)
        else:
            member.size = 3
            tar.addfile(member, io.BytesIO(b"bad"))
    (tmp_path / "into").mkdir()
    with pytest.raises(download.DownloadError, match="evil.tgz: unsafe or damaged archive"):
        download.unpack(archive, tmp_path / "into")
    assert not (tmp_path / "outside.jpg").exists() and not list((tmp_path / "into").iterdir())


def test_unpack_puts_an_absolute_member_inside_the_folder(tmp_path):
    archive = tmp_path / "abs.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        member = tarfile.TarInfo(str(tmp_path / "escaped.jpg"))
        member.size = 3
        tar.addfile(member, io.BytesIO(b"abc"))
    download.unpack(archive, tmp_path / "into")
    assert not (tmp_path / "escaped.jpg").exists()
    assert [p.read_bytes() for p in (tmp_path / "into").rglob("escaped.jpg")] == [b"abc"]

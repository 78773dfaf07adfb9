"""app.py: the /predict endpoint through gradio's own client, hostile uploads, and the
page in a real headless browser (Debian's chromium driven by Playwright)."""
import shutil
import socket
import subprocess
import sys

import pytest
from PIL import Image

from conftest import ROOT

gr = pytest.importorskip("gradio", reason="the web page needs requirements-app.txt")
gradio_client = pytest.importorskip("gradio_client")

import app  # noqa: E402
import predict  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained):
    out, _ = trained
    args = app.get_args_parser().parse_args(["--weights", str(out / "best.pth"), "--port", str(free_port())])
    blocks = app.launch(args, gr)
    yield f"http://127.0.0.1:{args.port}/", out / "best.pth"
    blocks.close()


@pytest.mark.slow
def test_predict_endpoint_answers_as_predict_py_and_survives_bad_files(server, colour_data, tmp_path):
    from gradio_client import Client, handle_file

    url, weights = server
    client = Client(url, verbose=False)
    image = colour_data / "val" / "green" / "green_1.jpg"
    answer = client.predict(handle_file(str(image)), api_name="/predict")
    classifier = predict.load_classifier(str(weights))
    (_, probs, _), = predict.predict_files(classifier, [str(image)], 1)
    assert answer["label"] == classifier.names[max(range(3), key=probs.__getitem__)]
    got = {c["label"]: c["confidence"] for c in answer["confidences"]}
    assert got == pytest.approx(dict(zip(classifier.names, probs)), abs=1e-6)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a picture")
    Image.new("1", (9500, 9500)).save(tmp_path / "bomb.png")  # 90 Mpx: over the decompression-bomb limit
    for bad, message in (("empty.jpg", "an empty file"), ("text.jpg", "not a readable image"),
                         ("bomb.png", "decompression-bomb limit")):
        with pytest.raises(Exception, match=message) as e:
            client.predict(handle_file(str(tmp_path / bad)), api_name="/predict")
        assert "/tmp/gradio" not in str(e.value)  # named as uploaded, not by the server's temporary path
    assert client.predict(handle_file(str(image)), api_name="/predict")["label"] == answer["label"]  # still serving


@pytest.mark.slow
def test_the_page_in_a_real_browser(server, colour_data, tmp_path):
    if not CHROMIUM:
        pytest.skip("no chromium here (.ci/run installs Debian's)")
    url, _ = server
    shot = tmp_path / "page.png"
    texts = browse(url, [colour_data / "val" / "red" / "red_0.jpg", colour_data / "val" / "blue" / "blue_0.jpg"], shot)
    assert texts[:2] == ["red", "blue"]
    with Image.open(shot) as img:
        assert img.width >= 800 and img.height >= 600


def browse(url: str, photos: list, screenshot, timeout_ms: int = 60_000) -> list[str]:
    """Open the page in headless chromium, drop the photos on it, wait for the results and
    take a screenshot; returns the top class shown for each photo. (Also how the README's
    screenshot was taken.)"""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync", "--disable-quic"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url, timeout=timeout_ms)
            page.locator("#photos input[type=file]").set_input_files([str(p) for p in photos], timeout=timeout_ms)
            page.locator("#results .top").nth(len(photos) - 1).wait_for(timeout=timeout_ms)
            page.screenshot(path=str(screenshot), full_page=True)
            return page.locator("#results .top").all_inner_texts()
        finally:
            browser.close()


def test_hostile_uploads_give_a_message_on_the_page(server, tmp_path):
    url, weights = server
    page = app.Page(predict.load_classifier(str(weights)), max_upload_mb=0.001)
    (tmp_path / "big.png").write_bytes(b"\x89PNG" + b"\0" * 4000)
    (tmp_path / "<img src=x onerror=alert(1)>.jpg").write_text("not an image")
    html = page.results_html([("big.png", str(tmp_path / "big.png")),
                              ("<img src=x onerror=alert(1)>.jpg", str(tmp_path / "<img src=x onerror=alert(1)>.jpg"))])
    assert "is over the 0.001 MB limit" in html and "not a readable image" in html
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in html and "<img src=x" not in html  # escaped, not markup


def test_without_gradio_one_line_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if it were not installed
    assert app.cli(["--weights", "whatever.pth"]) == 2
    err = capsys.readouterr().err
    assert err == "error: gradio: not installed; the web page needs it: pip install -r requirements-app.txt\n"


@pytest.mark.slow
def test_other_hosts_are_warned_about_and_the_trio_never_imports_gradio(capsys):
    app.check_args(app.get_args_parser().parse_args(["--host", "0.0.0.0"]))
    assert "open to every machine" in capsys.readouterr().err
    code = ("import sys, train, predict, evaluate, export, model, alexnet.datasets; "
            "print(sorted(m for m in sys.modules if 'gradio' in m))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.stdout.strip() == "[]", r.stderr

"""A local web page to try a trained model on your own photos.

    python app.py                                   # runs/best.pth on http://127.0.0.1:7860
    python app.py --weights runs/best.onnx --port 8000
    python app.py --host 0.0.0.0                    # reachable from other machines (a warning says so)

Drop or pick one or several photos, or take a webcam shot where the browser allows it:
each gets its most likely classes with probability bars and, with a PyTorch checkpoint,
the Grad-CAM overlay of where the network looked; the model card above says what the
model is. Scripts can use the same server: its first API endpoint, /predict, takes one
image file and returns the classes with their probabilities:

    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860/").predict(handle_file("tulip.jpg"), api_name="/predict")

It loads and preprocesses through alexnet/classifier.py (one prediction path for predict.py,
evaluate.py and this page). gradio is imported here only: pip install -r requirements-app.txt.
"""
import alexnet.startup  # noqa: F401  first: Ctrl-C while torch loads is one line, not a traceback

import base64
import errno
import html
import io
import os
import socket
import sys
import time

from PIL import Image

from alexnet import folders, images
from alexnet.classifier import DEFAULT_WEIGHTS, TorchClassifier, checked_probabilities, load_classifier
from alexnet.errors import ArgumentError, DataError, OneLineParser, UserError, run_main
from alexnet.figures import cam_overlay
from alexnet.predictions import UNKNOWN

MAX_UPLOAD_MB = 20
TOP_SHOWN = 5


def get_args_parser() -> OneLineParser:
    p = OneLineParser(description="A local web page to try a trained AlexNet on your own photos.")
    p.add_argument("--weights", "--model_path", dest="weights", default=DEFAULT_WEIGHTS,
                   help="a train.py checkpoint (with Grad-CAM) or its .onnx export")
    p.add_argument("--class-indices", "--class_indices", dest="class_indices", help="for a raw state_dict")
    p.add_argument("--host", default="127.0.0.1", help="127.0.0.1: this machine only; 0.0.0.0: every network")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_MB, help="largest file accepted")
    return p


def require_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local page
    try:
        import gradio
    except ImportError:
        raise UserError("gradio: not installed; the web page needs it: pip install -r requirements-app.txt") from None
    return gradio


def markdown_text(name: str) -> str:
    """A name from the user's files as literal text inside a line of gradio's Markdown: each
    character that Markdown, HTML or its LaTeX could read as syntax there (a backtick, ``<img``,
    ``*``, ``$``) as its numeric character reference."""
    return "".join(f"&#{ord(c)};" if c in "\\`*_[]<>&!~|$" else c for c in folders.printable(name))


class Page:
    """What the page does with an image, apart from gradio: the tests call it directly too."""

    def __init__(self, classifier, max_upload_mb: float):
        self.classifier, self.max_mb = classifier, max_upload_mb
        # the threshold evaluate.py --ood --store-threshold wrote into the model file, as predict.py's auto
        self.min_confidence = classifier.card["min_confidence"]
        checked_probabilities(classifier, [classifier.prepare_pil(Image.new("RGB", (64, 64)), "warm-up")],
                                      ["a blank test image"])

    def open(self, path: str, name: str):
        """An uploaded file as an upright RGB image; DataError with the reason if it is none."""
        size = os.path.getsize(path)
        if size > self.max_mb * 2**20:
            raise DataError(f"{name}: {size / 2**20:.3g} MB is over the {self.max_mb:g} MB limit")
        if size == 0:
            raise DataError(f"{name}: an empty file")
        try:
            with images.open_image(path) as img:
                return images.upright_rgb(img, name)
        except DataError as e:  # name the file as the user called it, not by the server's temporary path
            raise DataError(str(e).replace(path, name)) from None

    def classify(self, img, name: str) -> tuple[dict[str, float], object]:
        """{class: probability}, and the Grad-CAM overlay (None for an ONNX model)."""
        probs = checked_probabilities(self.classifier, [self.classifier.prepare_pil(img, name)], [name])[0]
        named = dict(zip(self.classifier.names, probs))
        overlay = None
        if isinstance(self.classifier, TorchClassifier):
            overlay = cam_overlay(*self.classifier.grad_cam(img, max(range(len(probs)), key=probs.__getitem__)))
        return named, overlay

    def answer(self, probs: dict[str, float]) -> dict:
        """/predict's answer: the label ('unknown' below the model's stored --min-confidence) and
        every class's probability, most likely first (gradio Label's own JSON shape)."""
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])
        unknown = self.min_confidence is not None and ranked[0][1] < self.min_confidence
        return {"label": UNKNOWN if unknown else ranked[0][0],
                "confidences": [{"label": c, "confidence": p} for c, p in ranked]}

    def card(self) -> str:
        """The model card, as Markdown."""
        c = self.classifier.card
        acc = f"{c['best_acc']:.3f} validation top-1 (epoch {c['epoch']})" if c.get("best_acc") is not None \
            else "no validation score recorded"
        # names, not paths: with --host 0.0.0.0 a path would show every visitor the server's folders
        data = f", trained on <code>{markdown_text(os.path.basename(os.path.normpath(str(c['data']))))}</code>" \
            if c.get("data") else ""
        names = ", ".join(markdown_text(n) for n in self.classifier.names)
        int8 = (f" int8: top-1 {c['int8']['int8']:.3f} against fp32's {c['int8']['fp32']:.3f} on val/."
                if c.get("int8") else "")
        calibrated = (f" Probabilities calibrated (temperature {c['temperature']:.2f})."
                      if c["temperature"] != 1.0 else "")
        threshold = "" if self.min_confidence is None else \
            f" Answers '{UNKNOWN}' below a top probability of {self.min_confidence:.3f}."
        return (f"### AlexNet ({markdown_text(str(c.get('arch') or 'unknown'))}): {acc}{data}\n"
                f"{len(self.classifier.names)} classes: {names}. "
                f"Model file: <code>{markdown_text(os.path.basename(str(c['weights'])))}</code>"
                + ("" if isinstance(self.classifier, TorchClassifier) else
                   " (ONNX: no Grad-CAM; run the .pth for it)") + f".{int8}{calibrated}{threshold}")

    def results_html(self, uploads: list[tuple[str, object]]) -> str:
        """One block per upload: the overlay (or the photo), the top classes as bars, or the
        reason it could not be read. Every name is escaped: file names come from the user."""
        blocks = []
        for name, item in uploads:
            title = html.escape(folders.printable(name))
            try:
                img = self.open(item, name) if isinstance(item, str) else images.upright_rgb(item, name)
                probs, overlay = self.classify(img, name)
            except DataError as e:
                blocks.append(f'<div class="result error"><b>{title}</b>: {html.escape(str(e))}</div>')
                continue
            ranked = sorted(probs.items(), key=lambda kv: -kv[1])[:TOP_SHOWN]
            top = html.escape(folders.printable(ranked[0][0]))
            if self.answer(probs)["label"] == UNKNOWN:
                top = f"{UNKNOWN} (top {top} &lt; {self.min_confidence:.3f})"
            bars = "".join(f'<div class="bar"><span class="label">{html.escape(folders.printable(c))}</span>'
                           f'<span class="track"><span class="fill" style="width:{100 * p:.1f}%"></span></span>'
                           f'<span class="value">{p:.3f}</span></div>' for c, p in ranked)
            picture = png_data_url(overlay if overlay is not None else img)
            blocks.append(f'<div class="result"><img src="{picture}" alt="{title}"><div><b>{title}</b>: '
                          f'<span class="top">{top}</span> '
                          f'{ranked[0][1]:.3f}{bars}</div></div>')
        return "".join(blocks) or "<p>Drop some photos above.</p>"


def png_data_url(picture) -> str:
    """A small PNG of a Pillow image or a uint8 H x W x 3 array, inline in the page."""
    img = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    img = img.copy()
    img.thumbnail((224, 224))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


CSS = """
.result {display: flex; gap: 1em; align-items: flex-start; margin: 0.6em 0; padding: 0.5em; border-radius: 6px;
         background: var(--block-background-fill);}
.result img {width: 160px; height: 160px; object-fit: contain;}
.result.error {color: #b00020;}
.bar {display: flex; align-items: center; gap: 0.5em; margin: 0.15em 0;}
.bar .label {width: 9em; overflow: hidden; text-overflow: ellipsis;}
.bar .track {width: 14em; height: 0.8em; background: #ddd; border-radius: 3px;}
.bar .fill {display: block; height: 100%; background: #f97316; border-radius: 3px;}
"""


def build(page: Page, gr):
    """The gradio Blocks: the /predict endpoint first, then the page."""
    def predict_one(path: str | None) -> dict:
        if not path:
            raise gr.Error("no image given", print_exception=False)
        try:
            return page.answer(page.classify(page.open(path, os.path.basename(path)), os.path.basename(path))[0])
        except DataError as e:  # an answer to the caller; the server carries on
            raise gr.Error(str(e), print_exception=False) from None

    def classify_uploads(paths: list[str] | None, shot) -> str:
        uploads = [(os.path.basename(p), p) for p in paths or []]
        if shot is not None:
            uploads.append(("webcam / picture", shot))
        return page.results_html(uploads)

    with gr.Blocks(title="AlexNet: try it on your photos") as blocks:
        # JSON in gr.Label's shape, {"label", "confidences"}: a Label would name the top class even below the threshold
        api_file, api_label = gr.File(visible=False, type="filepath"), gr.JSON(visible=False)
        gr.Button(visible=False).click(predict_one, api_file, api_label, api_name="predict")
        gr.Markdown(page.card())
        with gr.Row():
            files = gr.File(file_count="multiple", file_types=["image"], type="filepath", label="Drop or pick photos",
                            elem_id="photos")
            shot = gr.Image(sources=["webcam", "upload"], type="pil", label="or one picture (webcam where allowed)")
        button = gr.Button("Classify", variant="primary", elem_id="classify")
        results = gr.HTML(elem_id="results")
        button.click(classify_uploads, [files, shot], results, api_name="classify")
        files.upload(classify_uploads, [files, shot], results, api_name=False)
    return blocks


def check_args(args) -> None:
    if not 1 <= args.port <= 65535:
        raise ArgumentError(f"--port {args.port}: must be in 1..65535")
    if not 0 < args.max_upload_mb <= 1024:
        raise ArgumentError(f"--max-upload-mb {args.max_upload_mb}: must be in (0, 1024]")
    check_listen(args.host, args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {args.host}: the page and its API are open to every machine that can reach "
              f"this one; there is no login", file=sys.stderr)


def check_listen(host: str, port: int) -> None:
    """Bind once to say which of --host and --port is wrong, before loading anything."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise ArgumentError(f"--host {host}: not a host name or address ({e})") from None
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ArgumentError(f"--port {port}: already in use on {host}; pick another port") from None
            if e.errno in (errno.EACCES, errno.EPERM):
                raise ArgumentError(f"--port {port}: not allowed to listen there (ports below 1024 need "
                                    f"administrator rights)") from None
            raise ArgumentError(f"--host {host}: cannot listen on this address ({e.strerror or e}); "
                                f"127.0.0.1 or 0.0.0.0 work everywhere") from None


def launch(args, gr):
    """Build and start the server in the background; returns the Blocks (stop it with .close())."""
    check_args(args)
    classifier = load_classifier(args.weights, "cpu", False, args.class_indices)
    blocks = build(Page(classifier, args.max_upload_mb), gr)
    try:
        blocks.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, quiet=True,
                      show_error=True, ssr_mode=False, max_file_size=f"{args.max_upload_mb}mb", footer_links=["api"],
                      css=CSS)
    except OSError as e:
        raise ArgumentError(f"--host {args.host} --port {args.port}: cannot listen there ({e})") from None
    return blocks


def cli(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = get_args_parser().parse_args(argv)

    def serve(args) -> int:
        blocks = launch(args, require_gradio())
        print(f"serving {args.weights} on http://{args.host}:{args.port}/ (ready in {time.monotonic() - started:.1f} "
              f"s; Ctrl-C to stop)", flush=True)
        try:
            blocks.block_thread()
        except KeyboardInterrupt:
            blocks.close()
        return 0

    return run_main(serve, args)


if __name__ == "__main__":
    sys.exit(cli())

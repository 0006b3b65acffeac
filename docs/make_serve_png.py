"""How docs/serve.png was made: `retrain serve` on a model trained by `make retrain` (the
Fashion-MNIST sample), one image of six classes picked in the page, headless Chromium
(Debian's) through Playwright, the screenshot reduced to 64 colours.

    .venv/bin/python docs/make_serve_png.py runs/fashion-mnist-sample/model.h5
"""
import subprocess
import sys
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("ankle_boot", "bag", "coat", "dress", "sneaker", "trouser")


def main(model, out=ROOT / "docs" / "serve.png"):
    images = [sorted((ROOT / "data" / "fashion-mnist-sample" / c).iterdir())[-1] for c in CLASSES]
    server = subprocess.Popen([sys.executable, "-m", "retrain", "serve", model, "--port", "0",
                               "-q"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split()[3]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1180, "height": 640})
            page.goto(url)
            page.wait_for_selector("text=test accuracy")
            page.set_input_files("#files", [str(p) for p in images])
            for path in images:
                page.locator(f".result[data-state=done]:has-text('{path.name}')").wait_for()
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait()
    Image.open(out).convert("RGB").quantize(64).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:])

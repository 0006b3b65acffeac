"""The page at / in a real headless Chromium (Debian's `chromium`, driven by Playwright's
Python client pointed at that binary: no browser download): pick two photos and drop a
third, wait for each one's expected label (what `retrain classify` answers), see the model
card with its test accuracy and confusion matrix, and no console message, no request to
another host.
Skipped, with the reason, where Chromium or Playwright is missing (apt-get install
chromium; make install). SERVE_SCREENSHOT=path keeps the screenshot (docs/serve.png)."""
import base64
import contextlib
import json
import os
import shutil
from pathlib import Path

import h5py
import pytest

from retrain.classify import classify
from retrain.model_file import load_model_file
from serving import PHOTOS, needs_serve, running

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None

pytestmark = [
    needs_serve,
    pytest.mark.skipif(BROWSER is None, reason="no headless browser: apt-get install chromium "
                                               "(or Google Chrome) to check the serve page"),
    pytest.mark.skipif(sync_playwright is None, reason="Playwright's Python client is not "
                                                       "installed (make install)")]
NAMES = ("rocket.jpg", "coffee.png")       # picked with the file chooser
DROPPED = "chelsea.png"                     # dropped on the page

DROP = """([name, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type: "image/png" }));
  document.getElementById("drop").dispatchEvent(
    new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
}"""


@contextlib.contextmanager
def browser_page(server, messages, foreign):
    """A 1280 px Chromium page on the server's /, recording console messages and requests
    to anything but the server (and blob:/data: thumbnails)."""
    origin = f"http://127.0.0.1:{server.port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=BROWSER,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
            page.on("request", lambda r: r.url.startswith((origin, "blob:", "data:"))
                    or foreign.append(r.url))
            page.goto(origin + "/")
            yield page
        finally:
            browser.close()


def test_the_page_classifies_picked_photos_and_shows_the_model_card(colour_model, tmp_path):
    model = load_model_file(colour_model)
    shot = Path(os.environ.get("SERVE_SCREENSHOT") or tmp_path / "serve.png").resolve()
    messages, foreign = [], []
    with running(colour_model, "-q") as server, browser_page(server, messages,
                                                             foreign) as page:
        expected = {Path(r["path"]).name: r["top"][0]["label"] for r in classify(
            model, [PHOTOS / n for n in (*NAMES, DROPPED)], **server.runtime())}
        page.wait_for_selector("text=test accuracy", timeout=30_000)
        page.set_input_files("#files", [str(PHOTOS / n) for n in NAMES])
        page.evaluate(DROP, [DROPPED, base64.b64encode((PHOTOS / DROPPED).read_bytes())
                             .decode("ascii")])
        for n in (*NAMES, DROPPED):      # (wait_for_function would need 'unsafe-eval')
            page.locator(f".result[data-state=done]:has-text('{n}')").wait_for(timeout=60_000)
        results = {n: page.locator(f".result:has-text('{n}') .label").first.inner_text()
                   for n in (*NAMES, DROPPED)}
        cells = page.locator("table.confusion td").count()
        card = page.inner_text("#card")
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
    assert results == expected
    assert cells == 9 and "stand_in" in card and "blue" in card
    assert messages == [] and foreign == []
    assert shot.stat().st_size > 10_000


def test_labels_from_the_model_file_are_shown_as_text_never_run(colour_model, tmp_path):
    """Model files are untrusted: a label that is HTML is drawn as its characters."""
    label = '<img src="/no-such.png" onerror="console.error(666)">'
    model = tmp_path / "model.h5"
    shutil.copy(colour_model, model)
    with h5py.File(model, "a") as f:
        metadata = json.loads(f.attrs["retrain_metadata"])
        metadata["labels"][2] = label
        f.attrs["retrain_metadata"] = json.dumps(metadata)
    messages, foreign = [], []
    with running(model, "-q") as server, browser_page(server, messages, foreign) as page:
        page.wait_for_selector("text=test accuracy", timeout=30_000)
        chips = page.locator("#card .chip").all_inner_texts()
        images = page.locator("#card img").count()
    assert chips[2] == label and images == 0
    assert messages == [] and foreign == []

"""report.html in a real browser: headless Chromium at 1280 px renders it without a console
message (no script, no failed resource) and takes a screenshot. Skipped, with the reason,
where no Chromium or Chrome is installed (Debian: apt-get install chromium).

`make report-check` runs this with REPORT_SCREENSHOT=runs/report-check.png to keep the
picture, and REPORT_HTML=path/to/report.html to check a real run's page instead."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrain.evaluate import evaluate_predictions
from retrain.report import write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)


def sample_report(root):
    """A 3-class run with 28x28 mistakes, early stopping and two skipped files."""
    rng = np.random.default_rng(0)
    labels = ["coat", "pullover", "shirt"]
    (root / "data").mkdir()
    paths = []
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (28, 28), np.uint8)).save(root / "data" / f"{i}.png")
        paths.append(f"{i}.png")
    metrics = {"classes": labels, "backbone": "efficientnet_lite0", "skipped": 2,
               "cache": {"hits": 90, "misses": 0}}
    for split in ("train", "val", "test"):
        targets = rng.integers(0, 3, 30)
        p = rng.dirichlet(np.ones(3), 30) + 0.8 * np.eye(3)[targets]
        metrics[split] = evaluate_predictions(p / p.sum(1, keepdims=True), targets, labels,
                                              paths=paths)
    losses = list(np.linspace(1.2, 0.3, 14))
    history = {"loss": losses, "accuracy": [1 - v / 2 for v in losses],
               "val_loss": [v + 0.1 + 0.02 * max(0, i - 9) for i, v in enumerate(losses)],
               "val_accuracy": [0.9 - v / 2 for v in losses], "best_epoch": 10}
    skipped = [("coat/empty.jpg", "empty file"), ("bag/broken.png", "not an image")]
    return write_report(root / "report.html", metrics, history, root / "data",
                        title="retrain: sample", skipped=skipped)


@pytest.mark.skipif(BROWSER is None, reason="no headless browser: apt-get install chromium "
                                            "(or Google Chrome) to check report.html")
def test_report_renders_in_headless_chromium_without_console_messages(tmp_path):
    page = Path(os.environ.get("REPORT_HTML") or sample_report(tmp_path)).resolve()
    shot = Path(os.environ.get("REPORT_SCREENSHOT") or tmp_path / "report.png").resolve()
    shot.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0", "--window-size=1280,2600",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    console = [line for line in done.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]
    assert console == [], console
    assert shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1280, 2600)
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50     # drawn, not a blank page

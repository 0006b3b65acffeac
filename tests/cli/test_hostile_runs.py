"""The held-out corpus of issue 21 (hostile_runs.py) through the CLI, in one subprocess run
by the harness (a hang ends it; peak RSS is per case): every case holds its promise, and
the transparent 4700x4700 PNG is classified within bounded memory (1.3 GB before)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hostile_runs as corpus
from conftest import _load_stand_in, write_small_data
from retrain.cli import main

HARNESS = Path(__file__).with_name("hostile_harness.py")
MAX_CLASSIFY_RSS_MB = 700          # 4700x4700 RGBA: 88 MB of pixels; 1,300 MB before


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The shared pieces (a trained run, a warm cache, another model's cache) made here
    with the stand-in backbone, then every case through the harness."""
    use_stand_in = _load_stand_in().use_stand_in
    folder = tmp_path_factory.mktemp("runs")
    data = write_small_data(folder / "small", ("bag", "coat", "dress"))
    patch = pytest.MonkeyPatch()
    try:
        use_stand_in(patch)
        assert main(corpus.fit(data, folder / "trained", folder / "warm-cache")) == 0
        patch.undo()
        use_stand_in(patch, seed=1)
        assert main(corpus.fit(data, folder / "other-run", folder / "other-cache")) == 0
    finally:
        patch.undo()
    cases, built = [], {}
    for build in corpus.CASES:
        built[build.__name__] = case = build(folder, data)
        cases.append([build.__name__, case.argv, case.cwd])
    (folder / "cases.json").write_text(json.dumps(cases))
    try:
        done = subprocess.run([sys.executable, str(HARNESS), str(folder / "cases.json")],
                              capture_output=True, text=True, timeout=600, cwd=HARNESS.parent,
                              env=dict(os.environ, RETRAIN_STAND_IN="1"))
    finally:
        for case in built.values():
            for clean in case.cleanup:
                clean()
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout)
    return {name: (outcome[name], built[name]) for name in outcome}


@pytest.mark.parametrize("build", corpus.CASES, ids=lambda build: build.__name__)
def test_the_case_holds(results, build):
    result, case = results[build.__name__]
    assert case.check(result) == []


def test_a_big_transparent_png_is_classified_in_bounded_memory(results):
    result, _ = results["transparent_4700_png_in_classify"]
    assert result["peak_rss_mb"] <= MAX_CLASSIFY_RSS_MB, result["peak_rss_mb"]

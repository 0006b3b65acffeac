"""`kill -9` at random moments of `retrain fit` into a folder that already holds a run.

    python tests/cli/kill_fit.py --kills 30        # the acceptance run of issue 9 (~1 min)

Each fit runs in a child process with the stand-in backbone (tests/pipeline/stand_in.py) and
its own seed, and is killed after a random delay within the time a whole fit takes. After
every kill RUN must hold one run's complete set: byte for byte the last completed run's, or
(killed after the swap) the killed run's own complete set. At the end one more fit must
succeed and leave no staging folder or temporary file behind. test_kill_fit.py runs a few
kills in the suite and all 30 with RETRAIN_SLOW=1."""
import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
OUTPUTS = ("split.json", "skipped.tsv", "history.json", "metrics.json", "report.html",
           "labels.txt", "model.h5")


def make_data(root):
    for label, channel in (("blue", 2), ("green", 1), ("red", 0)):
        (root / label).mkdir(parents=True)
        for i in range(12):
            pixels = np.full((10, 12, 3), 40 + 3 * i, np.uint8)
            pixels[..., channel] = 200 - 5 * i
            Image.fromarray(pixels).save(root / label / f"{label}{i}.png")


def start_fit(data, run, cache, seed):
    """`retrain fit` with the stand-in backbone, in a child process."""
    code = (f"import sys; sys.path[:0] = [{str(HERE.parent / 'pipeline')!r}]\n"
            "import pytest, stand_in\n"
            "stand_in.use_stand_in(pytest.MonkeyPatch())\n"
            "from retrain.cli import main\n"
            f"sys.exit(main(['fit', {str(data)!r}, '--out', {str(run)!r}, '--cache', "
            f"{str(cache)!r}, '--epochs', '5', '--seed', '{seed}', '-q']))\n")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def snapshot(run):
    return {p.name: p.read_bytes() for p in run.iterdir()
            if p.is_file() and p.name != ".retrain.lock"}


def is_complete_run_of_seed(files, seed, folder):
    """All outputs present, and the model, labels and metrics from one run (`seed`)."""
    from retrain.engine import read_metadata

    if sorted(files) != sorted(OUTPUTS):
        return False
    metadata = read_metadata(folder / "model.h5")
    metrics = json.loads(files["metrics.json"])
    labels = files["labels.txt"].decode().splitlines()
    return (metadata["provenance"]["head"]["seed"] == seed and labels == metadata["labels"]
            and all(metadata["metrics"][s]["accuracy"] == metrics[s]["accuracy"]
                    for s in ("train", "val", "test")))


def check(folder, run, last, seed):
    files = snapshot(run)
    if files == last:
        return "old"
    if is_complete_run_of_seed(files, seed, run):
        return "new"
    raise AssertionError(f"after the kill {run} holds neither run's complete set: "
                         f"{sorted(files)}")


def main(kills, folder, rng_seed=0):
    folder = Path(folder)
    data, run, cache = folder / "data", folder / "run", folder / "cache"
    make_data(data)
    started = time.monotonic()
    first = start_fit(data, run, cache, seed=1000)
    assert first.wait() == 0, first.stderr.read().decode()
    whole = time.monotonic() - started
    last = snapshot(run)
    rng, outcomes = random.Random(rng_seed), {"old": 0, "new": 0, "finished": 0}
    for trial in range(kills):
        child = start_fit(data, run, cache, seed=trial)
        time.sleep(rng.uniform(0, whole))
        child.kill()
        child.wait()
        outcome = check(folder, run, last, trial) if child.returncode < 0 else "finished"
        if outcome == "finished":
            assert child.returncode == 0, child.stderr.read().decode()
        outcomes[outcome] += 1
        last = snapshot(run)
    final = start_fit(data, run, cache, seed=9999)
    assert final.wait() == 0, final.stderr.read().decode()
    assert is_complete_run_of_seed(snapshot(run), 9999, run)
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    leftovers += [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    return outcomes


if __name__ == "__main__":
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(main(options.kills, folder, options.seed))

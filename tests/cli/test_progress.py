"""Progress output: tqdm bars on a terminal; whole lines, a few seconds apart, elsewhere."""
import io
import time

from retrain import progress
from retrain.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run_bar(stream, steps=100, pause=0.0):
    with progress_bar(total=steps, desc="features", unit="img", file=stream) as bar:
        for _ in range(steps):
            time.sleep(pause)
            bar.update(1)
    return stream.getvalue()


def test_piped_output_is_the_first_and_the_final_count_as_whole_lines():
    text = run_bar(io.StringIO())
    assert "\r" not in text
    assert text.split("\n")[:-1] == [
        line for line in text.split("\n")[:-1] if line.startswith("features: ")]
    lines = text.split("\n")[:-1]
    assert len(lines) == 2 and lines[0].startswith("features: 0/100 (0%)")
    assert lines[1].startswith("features: 100/100 (100%)")


def test_piped_output_repeats_every_few_seconds(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_SECONDS", 0.01)
    lines = run_bar(io.StringIO(), steps=10, pause=0.02).split("\n")[:-1]
    assert len(lines) >= 5 and lines[-1].startswith("features: 10/10 (100%)")
    counts = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)   # no line twice


def test_a_terminal_gets_the_redrawn_bar():
    text = run_bar(Terminal())
    assert "\r" in text and "100/100" in text and "|" in text


def test_a_disabled_bar_writes_nothing():
    stream = io.StringIO()
    with progress_bar(total=5, file=stream, disable=True) as bar:
        bar.update(5)
    assert stream.getvalue() == ""

"""Run `retrain` commands in this process, one after another, and report each one's exit
status, output, peak RSS and peak traced allocations as JSON on stdout.

    python hostile_harness.py CASES.json    # [[name, [argv...]] or [name, [argv...], cwd]]

Run as a subprocess by test_hostile_models.py and test_hostile_runs.py, so that peak RSS
(ru_maxrss) belongs to these commands alone. A command that hangs (a read of a FIFO) ends
the process after TIMEOUT seconds with the traceback on stderr, after the name of the case
on stderr. With RETRAIN_STAND_IN=1 in the environment, `fit` uses the stand-in backbone of
tests/pipeline/stand_in.py; a case's third element is the folder it runs in."""
import contextlib
import faulthandler
import io
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

TIMEOUT = 60


def run_case(argv):
    from retrain.cli import main

    out, err = io.StringIO(), io.StringIO()
    tracemalloc.reset_peak()
    _reset_peak_rss()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue(),
            "traced_peak_mb": tracemalloc.get_traced_memory()[1] / 2**20,
            "seconds": time.perf_counter() - started,
            "peak_rss_mb": _peak_rss_mb()}


def _reset_peak_rss():
    """Linux: start this case's peak RSS (VmHWM) from the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _peak_rss_mb():
    """VmHWM where /proc has it: ru_maxrss would include the parent's peak before exec."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _use_stand_in():
    import pytest

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
    import stand_in

    stand_in.use_stand_in(pytest.MonkeyPatch())


def main(cases_file):
    import retrain.cli  # noqa: F401  (imports counted before the first case)

    if os.environ.get("RETRAIN_STAND_IN") == "1":
        _use_stand_in()
    tracemalloc.start()
    results = {}
    home = os.getcwd()
    for name, argv, *where in json.loads(open(cases_file).read()):
        print(f"case {name}", file=sys.stderr, flush=True)
        os.chdir(where[0] if where and where[0] else home)
        faulthandler.dump_traceback_later(TIMEOUT, exit=True)
        results[name] = run_case(argv)
        faulthandler.cancel_dump_traceback_later()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])

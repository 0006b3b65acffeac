"""kill -9 during `retrain fit` into a folder holding a run (kill_fit.py says how): 4 kills
in the suite, the acceptance's 30 with RETRAIN_SLOW=1."""
import os

import kill_fit


def test_kill_9_during_fit_leaves_one_complete_run(tmp_path):
    kills = 30 if os.environ.get("RETRAIN_SLOW") else 4
    outcomes = kill_fit.main(kills, tmp_path)
    assert sum(outcomes.values()) == kills

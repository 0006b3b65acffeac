"""Makes tests/ importable from every test folder (the folders are not packages), so that
helpers shared by all of them, such as numerics.py, are imported by name."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _a_cache_folder_of_its_own(tmp_path_factory):
    """retrain's default cache folder (files.default_cache_dir: features where a test gives
    no --cache, OpenVINO's compiled models) is the suite's own, not the user's."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    patch.undo()

"""The name this project installs under, and the pip line that adds one of its extras.

PyPI's `retrain` is another project (an LLM training framework that pulls in torch and
CUDA), so `pip install 'retrain[dask]'` installs that one. This project's distribution is
`retrain-numpy` (free on PyPI when chosen, 2026-12-07); the import name and the command
stay `retrain`. It is installed from its clone, so the hint names the clone's folder."""
import shlex
from pathlib import Path

__all__ = ["DISTRIBUTION", "pip_install"]

DISTRIBUTION = "retrain-numpy"


def pip_install(extra):
    """The pip line that installs this project with `extra`: from the clone this copy was
    installed from (an editable install), else by the distribution's name."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file():
        return f"pip install -e {shlex.quote(f'{root}[{extra}]')}"
    return f"pip install '{DISTRIBUTION}[{extra}]'"

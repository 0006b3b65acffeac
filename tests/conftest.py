"""Makes tests/ importable from every test folder (the folders are not packages), so that
helpers shared by all of them, such as numerics.py, are imported by name."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

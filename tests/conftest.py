import sys
from pathlib import Path

# Make tests/ helpers (parity_support, ...) importable as plain modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import os

# Command-line tests run `python -m lvae_jax ...` in subprocesses; let them share one persistent
# compilation cache inside the checkout (ignored by git) instead of the user's home.
os.environ.setdefault("LVAE_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "xla"))

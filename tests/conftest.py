import sys
from pathlib import Path

# Make tests/ helpers (parity_support, ...) importable as plain modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))

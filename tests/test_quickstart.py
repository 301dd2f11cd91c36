"""The README's main job: the offline quickstart on the embedded demo model."""

from __future__ import annotations

import json
import subprocess
import sys

from lvae_jax.evaluation.rd_json import load_rd
from parity_support import REPO


def test_quickstart_runs_offline_and_writes_its_outputs(tmp_path):
    out = tmp_path / "qs"
    r = subprocess.run([sys.executable, "-m", "lvae_jax", "quickstart", "--out", str(out), "--max-side", "128",
                        "--num-lambdas", "2"], cwd=REPO, capture_output=True, text=True, timeout=900,
                       env={**__import__("os").environ, "NO_PROXY": "*", "HTTP_PROXY": "http://0.0.0.0:9",
                            "HTTPS_PROXY": "http://0.0.0.0:9"})
    assert r.returncode == 0, r.stderr[-3000:]
    # The demo model announces itself as such (its own description, not a path that says "demo").
    assert any(line.startswith("note: DEMO MODEL") for line in r.stdout.splitlines()), r.stdout
    for name in ("rd.json", "jpeg.json", "rd.png", "side_by_side.png", "astronaut.lvae", "astronaut.png"):
        assert (out / name).is_file(), name
    # three 128-px panels side by side, with caption lines under them
    from PIL import Image
    w, h = Image.open(out / "side_by_side.png").size
    assert w == 3 * 128 + 2 * 8 and h > 128 + 30
    model = load_rd(out / "rd.json")
    raw = json.loads((out / "rd.json").read_text())
    assert {"name", "test-set", "lambdas", "results"} <= set(raw) and len(model.bpp) == 2
    # bpp of the bitstream we can check independently: 8 * bytes / pixels of the one kept file.
    size = (out / "astronaut.lvae").stat().st_size
    assert 0 < 8 * size / (128 * 128) < 24
    assert all(20 < p < 60 for p in model.psnr)

"""The test images: small RGB PNG files made from scikit-image's sample photographs (BSD-licensed,
installed with the package, no download), written once per process into a temporary folder.

The names say what the tests need — the size — and where the content comes from; tests depend on
sizes and on being natural photographs, not on particular pixels.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np

#: name -> (scikit-image sample, crop (top, left, height, width) of it, output side).
SPECS = {
    "face64-1.png": ("astronaut", (40, 150, 150, 150), 64),
    "face64-2.png": ("astronaut", (20, 170, 120, 120), 64),
    "cat64.png": ("chelsea", (60, 140, 180, 180), 64),
    "cat128.png": ("chelsea", (0, 60, 300, 300), 128),
    "coffee64.png": ("coffee", (60, 160, 280, 280), 64),
    "rocket128.png": ("rocket", (20, 200, 260, 260), 128),
    "astronaut512.png": ("astronaut", (0, 0, 512, 512), 512),
    "coffee512.png": ("coffee", (0, 100, 400, 400), 512),
    "chelsea512.png": ("chelsea", (0, 75, 300, 300), 512),
    "astronaut256.png": ("astronaut", (100, 100, 300, 300), 256),
    "rocket256.png": ("rocket", (0, 100, 427, 427), 256),
    "coffee256.png": ("coffee", (0, 100, 400, 400), 256),
}


def _make(name: str) -> np.ndarray:
    from PIL import Image
    from skimage import data
    source, (t, l, h, w), side = SPECS[name]
    im = np.asarray(getattr(data, source)())[..., :3][t:t + h, l:l + w]
    if side is not None:
        im = np.asarray(Image.fromarray(im).resize((side, side), Image.Resampling.LANCZOS))
    return np.ascontiguousarray(im, dtype=np.uint8)


@functools.lru_cache(maxsize=1)
def images_dir() -> Path:
    """A folder holding every image of :data:`SPECS` (made on first use in this process)."""
    from PIL import Image
    d = Path(tempfile.mkdtemp(prefix="lvae-test-images-"))
    for name in SPECS:
        Image.fromarray(_make(name)).save(d / name)
    return d

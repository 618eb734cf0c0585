"""Ship the built-in base's direction table: toon3d/weights/base_directions.json.

    .venv/bin/python tools/ship_directions.py

Measures the table exactly as `toon3d avatar` would (SeFa on the shipped base, landmark and
oracle readings, the same samples and seed) and writes it with the checksum of the
factorisation, so avatars on these weights skip the measurement (about a minute on 2 cores)
and avatars on other weights ignore it. Run it again whenever base.safetensors changes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    """Measure and write the table; prints what it named."""
    from toon3d.io.atomic import atomic_file
    from toon3d.models import builtin_directions_path
    from toon3d.pipeline import AvatarModels, AvatarSettings

    models = AvatarModels(AvatarSettings(), torch.device("cpu"))
    models.use_shipped_table = False
    start = time.perf_counter()
    _, table = models.directions(progress=True)
    seconds = time.perf_counter() - start
    path = builtin_directions_path("base")
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(table.to_json(), indent=1))
    names = {k: v for k, v in (table.oracle_names or table.names or {}).items() if v}
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB, measured in {seconds:.0f} s); named: {sorted(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

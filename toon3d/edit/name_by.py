"""Which instrument names SeFa directions: the attribute oracle on the built-in world, dlib's landmarks elsewhere.

One rule for every caller (`toon3d directions --name-by`, `toon3d edit`, the avatar pipeline,
benchmarks/bench_edit.py), so a name means the same direction wherever it is resolved:

  - ``auto`` (default): the SynFace attribute oracle when G_base is the built-in base and the
    oracle's weights are shipped, else no oracle (dlib's landmarks alone). The oracle was
    trained on SynFace renders, so it says nothing about an FFHQ or a user generator.
  - ``landmarks``: no oracle, whatever the generator.
  - ``oracle``: the oracle, even on another generator (e.g. one trained here on SynFace); its
    weights missing is a one-line error.

With an oracle, `toon3d.edit.naming.DirectionTable.resolved` still falls back to the landmarks
for parameters the oracle reads badly (held-out R² below `ORACLE_MIN_R2`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from toon3d.errors import Toon3dError

NAME_BY = ("auto", "landmarks", "oracle")
BUILTIN_BASE_SPECS = ("base", "default")


def is_builtin_base(ckpt: str) -> bool:
    """True when --ckpt names the built-in base generator (not a file that happens to be called so)."""
    return ckpt in BUILTIN_BASE_SPECS and not Path(ckpt).is_file()


def oracle_available() -> bool:
    """Whether the built-in attribute oracle's weights are shipped (toon3d/weights/oracle_synface.safetensors)."""
    from toon3d.faces.attribute_oracle import WEIGHTS_NAME
    from toon3d.models import WEIGHTS_DIR

    return (WEIGHTS_DIR / f"{WEIGHTS_NAME}.safetensors").is_file()


def naming_oracle(name_by: str, ckpt: str, device: torch.device | str | None = None):
    """(AttributeOracle or None, a one-line note saying which instrument names directions and why)."""
    if name_by not in NAME_BY:
        raise Toon3dError(f"unknown --name-by {name_by!r}; choose one of {', '.join(NAME_BY)}")
    if name_by == "landmarks":
        return None, "names: dlib's landmarks (as asked)"
    if name_by == "auto":
        if not is_builtin_base(ckpt):
            return None, "names: dlib's landmarks (the attribute oracle reads the built-in world only)"
        if not oracle_available():
            return None, "names: dlib's landmarks (the built-in attribute oracle is not installed)"
    from toon3d.faces.attribute_oracle import load_attribute_oracle

    oracle = load_attribute_oracle().to(device).eval()
    why = "as asked" if name_by == "oracle" else "built-in base"
    if name_by == "oracle" and not is_builtin_base(ckpt):
        why = "as asked; it was trained on SynFace renders, so it reads only generators of that world"
    return oracle, f"names: the SynFace attribute oracle ({why}), dlib's landmarks where it reads a parameter badly"

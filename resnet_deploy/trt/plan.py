"""Where a plan's build record lives: the bundle manifest (``engines.plans``) or a ``.plan.json`` sidecar."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .. import layout
from ..bundle import read_manifest
from ..errors import UserError
from .profile import REBUILD


def plan_info(plan: "str | Path") -> dict | None:
    """The build record of a plan: from its bundle's manifest (``engines.plans``), else its ``.plan.json`` sidecar."""
    plan = Path(plan)
    if (plan.parent / layout.MANIFEST).is_file():
        try:
            info = read_manifest(plan.parent).get("engines", {}).get("plans", {}).get(plan.name)
        except (UserError, AttributeError):  # not a readable bundle manifest: fall back to the sidecar
            info = None
        if info:
            return info
    side = plan.with_name(layout.plan_sidecar(plan.name))
    if side.is_file():
        try:
            return json.loads(side.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{str(side)!r} is not valid JSON: {REBUILD}") from None
    return None


def normalize_cc(value) -> str:
    """'8.6', '86', 'sm_86' or (8, 6) -> '8.6' (the form Triton's cc_model_filenames keys take)."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return f"{int(value[0])}.{int(value[1])}"
    text = str(value).strip().lower().removeprefix("sm_").removeprefix("sm")
    if re.fullmatch(r"\d+\.\d+", text):
        return text
    if re.fullmatch(r"\d{2,3}", text):
        return f"{text[:-1]}.{text[-1]}"
    raise UserError(f"unrecognised compute capability {value!r} in the bundle manifest (expected e.g. 8.6)")

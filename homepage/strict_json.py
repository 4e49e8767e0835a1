"""JSON files every parser reads: NaN and infinities written as null, numpy scalars and arrays as plain values."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from homepage.errors import HomepageError
from homepage.replaced_file import replaced


def write_json(path: Path, data: object, option: str, **dumps: Any) -> None:
    """Write ``data`` as strict JSON (NaN and infinities as null, which every parser reads), or fail naming ``option``.

    A metric over no requests has no value: Python's ``json`` would write a bare ``NaN``. Written
    beside ``path`` then renamed over it: a full disk or a kill mid-write leaves the previous file
    (or none), never a truncated one a script would read as the report.
    """
    text = strict_dumps(data, **dumps)
    try:
        with replaced(path) as tmp:
            tmp.write_text(text)
    except OSError as e:
        raise HomepageError(f"{option} {path}: cannot write ({e.strerror or e})") from e


def strict_dumps(data: object, **dumps: Any) -> str:
    """``data`` as strict JSON text (NaN and infinities as null), for a command that prints its JSON.

    An estimate over no rows has no value: Python's ``json`` would print a bare ``NaN``, which
    ``jq`` and every strict parser reject.
    """
    return json.dumps(_strict(data), allow_nan=False, **dumps)


def _strict(x: object) -> object:
    if isinstance(x, dict):
        return {(k.item() if isinstance(k, np.generic) else k): _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    if isinstance(x, np.ndarray):
        return _strict(x.tolist())
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x

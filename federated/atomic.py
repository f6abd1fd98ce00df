"""One file written so that a reader, or a crash, sees the old content or the new, never half of it."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes | str, *, mode: int | None = None) -> Path:
    """Write `data` beside `path` and rename it into place; `mode` (e.g. 0o600) is set before the rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path

"""Reading a log file by byte offset: the one way job and viewer logs are served to clients (`logs -f` style)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def read_chunk(path: Path, offset: int, max_bytes: int) -> dict[str, Any]:
    """{text, offset (where the next read starts), size (of the file now)}; a missing file reads as empty."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(max_bytes)
    except FileNotFoundError:
        size, data = 0, b""
    return {"text": data.decode("utf-8", errors="replace"), "offset": offset + len(data), "size": size}

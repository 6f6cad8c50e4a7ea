"""Memory sizes ("512M", "2G") to bytes and back. K, M, G, T are powers of 1024, as in JupyterHub."""

from __future__ import annotations

import re

_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([KMGT])i?")


def parse_memory(text: object) -> int:
    """Bytes in a size such as "512M" or "1.5G"; ValueError saying what to write otherwise."""
    match = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(
            f"{text!r} is not a memory size; write a size such as 512M or 2G "
            "(K, M, G, T are powers of 1024)"
        )
    number, unit = match.groups()
    return round(float(number) * _UNITS[unit])


def format_memory(n_bytes: int) -> str:
    """The shortest exact spelling: 8589934592 -> "8G", 1536 MiB -> "1536M"; plain bytes otherwise."""
    for unit in ("T", "G", "M", "K"):
        if n_bytes and n_bytes % _UNITS[unit] == 0:
            return f"{n_bytes // _UNITS[unit]}{unit}"
    return str(n_bytes)

"""Read the configuration file: the shared YAML reader (duplicate keys and non-text keys are
problems, each key's line is kept) with the configuration's own note for an empty file."""

from __future__ import annotations

from typing import Any

from sts_wire.core.yamlfile import MAX_CHARS, Lines, line_of
from sts_wire.core.yamlfile import read_yaml as _read_yaml

from .errors import Problem

__all__ = ["MAX_CHARS", "Lines", "line_of", "read_yaml"]


def read_yaml(text: str) -> tuple[Any, Lines, list[Problem]]:
    """(data, line of each key path, problems). Data is None when the text is not usable YAML."""
    return _read_yaml(text, empty="the file is empty; start from config/examples/full.yaml")

"""Read YAML keeping each node's line and refusing what PyYAML would silently accept (both halves).

PyYAML keeps the last of two equal keys and reads `yes:`/`on:` keys as booleans; both hide
mistakes, so both become problems here.
"""

from __future__ import annotations

from typing import Any

import yaml

from .problems import PathPart, Problem

Lines = dict[tuple[PathPart, ...], int]


def read_yaml(text: str, empty: str = "the file is empty") -> tuple[Any, Lines, list[Problem]]:
    """(data, line of each key path, problems). Data is None when the text is not usable YAML
    (``empty`` is the problem reported for an empty text)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        what = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark else None
        return None, {}, [Problem((), f"not valid YAML: {what}; fix the syntax there", line)]
    if node is None:
        loader.dispose()
        return None, {}, [Problem((), empty)]
    lines: Lines = {}
    problems: list[Problem] = []
    try:
        data = _build(loader, node, (), lines, problems)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        return None, {}, [Problem((), f"not valid YAML: {exc}; fix the syntax there", line)]
    finally:
        loader.dispose()
    return data, lines, problems


def _build(loader, node, path, lines: Lines, problems: list[Problem]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        out: dict = {}
        seen: dict = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                problems.append(
                    Problem(
                        (*path, str(key_node.value)),
                        f"YAML reads this key as {type(key).__name__} {key!r}, not as text; "
                        f'quote it: "{key_node.value}"',
                        line,
                    )
                )
                continue
            if key in seen:
                problems.append(
                    Problem(
                        (*path, key),
                        f"key appears twice in this mapping (lines {seen[key]} and {line}); "
                        "YAML would keep only the last one: remove or merge one of them",
                        line,
                    )
                )
            seen[key] = line
            out[key] = _build(loader, value_node, (*path, key), lines, problems)
            lines[(*path, key)] = line
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, (*path, i), lines, problems) for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def line_of(lines: Lines, parts: tuple[PathPart, ...]) -> int | None:
    """Line of the deepest part of `parts` found in the file (a missing key: its parent's line)."""
    for end in range(len(parts), -1, -1):
        if parts[:end] in lines:
            return lines[parts[:end]]
    return None

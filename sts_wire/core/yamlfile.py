"""Read YAML keeping each node's line and refusing what PyYAML would silently accept (both halves).

PyYAML keeps the last of two equal keys and reads `yes:`/`on:` keys as booleans; both hide
mistakes, so both become problems here.
"""

from __future__ import annotations

from typing import Any

import yaml

from .problems import PathPart, Problem

Lines = dict[tuple[PathPart, ...], int]


# Real configurations and mount specs are a few KiB with a few hundred values. Far beyond that is
# a wrong file or a YAML bomb (aliases of aliases: "billion laughs"), refused before it costs
# minutes of CPU or gigabytes of memory.
MAX_CHARS = 1 << 20
MAX_VALUES = 100_000


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class _TooManyValues(Exception):
    pass


class _Refused(Exception):
    """A problem that makes the whole text unusable."""


def read_yaml(text: str, empty: str = "the file is empty") -> tuple[Any, Lines, list[Problem]]:
    """(data, line of each key path, problems). Data is None when the text is not usable YAML
    (``empty`` is the problem reported for an empty text)."""
    if len(text) > MAX_CHARS:
        return None, {}, [Problem((), f"the text is {len(text)} characters long, more than the {MAX_CHARS} "
                                      "accepted: is this the right file?")]
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters (NUL, binary) here
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line = mark.line + 1 if mark else None
        return None, {}, [Problem((), f"not valid YAML: {what}; fix the syntax there", line)]
    except RecursionError:
        return None, {}, [Problem((), "not valid YAML: brackets or indentation nested too deeply")]
    if node is None:
        loader.dispose()
        return None, {}, [Problem((), empty)]
    lines: Lines = {}
    problems: list[Problem] = []
    try:
        data = _build(loader, node, (), lines, problems, [MAX_VALUES])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        return None, {}, [Problem((), f"not valid YAML: {exc}; fix the syntax there", line)]
    except _TooManyValues:
        return None, {}, [Problem((), f"the text expands to more than {MAX_VALUES} values (aliases *name "
                                      "of aliases?): write the values out")]
    except _Refused as exc:
        return None, {}, [exc.args[0]]
    except RecursionError:
        return None, {}, [Problem((), "not valid YAML: nested too deeply")]
    finally:
        loader.dispose()
    return data, lines, problems


def _build(loader, node, path, lines: Lines, problems: list[Problem], budget: list[int]) -> Any:
    # An alias is the same node object again: expanding it counts again, so a bomb runs out.
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooManyValues
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_TAGS:
        # PyYAML would build the plain mapping or list and drop the tag without a word.
        raise _Refused(Problem(path, f"the YAML tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not "
                                     "accepted: remove it", node.start_mark.line + 1))
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
            out[key] = _build(loader, value_node, (*path, key), lines, problems, budget)
            lines[(*path, key)] = line
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, (*path, i), lines, problems, budget) for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def line_of(lines: Lines, parts: tuple[PathPart, ...]) -> int | None:
    """Line of the deepest part of `parts` found in the file (a missing key: its parent's line)."""
    for end in range(len(parts), -1, -1):
        if parts[:end] in lines:
            return lines[parts[:end]]
    return None

"""Load a configuration file: YAML, schema, cross-references, defaults, all problems at once."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .crossref import crossref_problems
from .errors import ConfigError, Problem
from .model import Config, build_config
from .schema import fill_defaults, schema_problems, type_word
from .yamlfile import MAX_CHARS, Lines, line_of, read_yaml


def load(path: str | Path) -> Config:
    """Read, validate and return the configuration at `path`; ConfigError lists every problem.

    Secret references are left as they are: resolve them with resolve_secret when needed.
    """
    source = str(path)
    try:
        with Path(path).open("rb") as f:
            raw = f.read(MAX_CHARS + 1)  # never a whole huge file in memory
        if len(raw) > MAX_CHARS:
            raise ConfigError([Problem((), f"the file is larger than {MAX_CHARS} bytes, far more than a "
                                           "configuration needs: is this the right file?")], source)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [Problem((), "file not found; check the path (examples: config/examples/)")], source
        ) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem((), "the file is not UTF-8 text; save it as UTF-8")], source) \
            from None
    except OSError as exc:
        raise ConfigError([Problem((), f"cannot read the file: {exc.strerror}")], source) from None
    return loads(text, source)


def loads(text: str, source: str = "<text>") -> Config:
    """Like load, for YAML text already in memory."""
    data, lines, problems = read_yaml(text)
    if data is None:
        raise ConfigError(problems, source)
    return _validated(data, lines, problems, source)


def from_dict(data: Any, source: str | None = None) -> Config:
    """Like load, for data already parsed (tests, tools). `data` is not changed."""
    return _validated(copy.deepcopy(data), {}, [], source)


def problems_in(data: Any) -> list[Problem]:
    """Every problem in parsed data, sorted; empty when it is a valid configuration."""
    if not isinstance(data, dict):
        return [_not_a_mapping(data)]
    found = schema_problems(data)
    found += crossref_problems(data, found)
    return ConfigError(found).problems


def _not_a_mapping(data: Any) -> Problem:
    return Problem((), (
        f"the file must be a mapping of sections (hub, auth, backends, groups, profiles), "
        f"not {type_word(data)}; start from config/examples/full.yaml"))


def _validated(data: Any, lines: Lines, problems: list[Problem], source: str | None) -> Config:
    found = problems + problems_in(data)
    if found:
        raise ConfigError(
            [Problem(p.parts, p.message, p.line or line_of(lines, p.parts)) for p in found], source
        )
    return build_config(fill_defaults(data), source)

"""The configuration schema (schema.yaml) and jsonschema errors turned into clear problems."""

from __future__ import annotations

import copy
import difflib
import json
from functools import cache
from importlib import resources
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .errors import Problem

_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping (key: value)",
    "null": "null",
}


@cache
def load_schema() -> dict:
    """The schema as data (cached; callers get a copy they may change)."""
    text = resources.files(__package__).joinpath("schema.yaml").read_text(encoding="utf-8")
    schema = yaml.safe_load(text)
    Draft202012Validator.check_schema(schema)
    return schema


def schema() -> dict:
    return copy.deepcopy(load_schema())


def resolve(node: dict, root: dict | None = None) -> dict:
    """`node` with a local `$ref` merged in (the node's own keys win), for defaults and docs."""
    root = root if root is not None else load_schema()
    if not isinstance(node, dict) or "$ref" not in node:
        return node
    target = root
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    merged = _deep_merge(resolve(target, root), {k: v for k, v in node.items() if k != "$ref"})
    return merged


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def fill_defaults(data: Any, node: dict | None = None) -> Any:
    """Add every missing key that has a schema `default` (in place; `data` must be valid)."""
    node = resolve(node if node is not None else load_schema())
    if isinstance(data, dict):
        props = node.get("properties", {})
        for key, sub in props.items():
            sub = resolve(sub)
            if key not in data and "default" in sub:
                data[key] = copy.deepcopy(sub["default"])
            if key in data:
                fill_defaults(data[key], sub)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in data.items():
                if key not in props:
                    fill_defaults(value, extra)
    elif isinstance(data, list) and isinstance(node.get("items"), dict):
        for item in data:
            fill_defaults(item, node["items"])
    return data


def show(value: Any) -> str:
    """A value as the user would write it, cut short."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def type_word(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__  # e.g. a date, which YAML makes of 2024-01-01


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def schema_problems(data: Any) -> list[Problem]:
    """Every way `data` breaks the schema, one problem per wrong or missing key."""
    validator = Draft202012Validator(load_schema())
    problems: list[Problem] = []
    for error in validator.iter_errors(data):
        problems.extend(_problems_from(error))
    # One `required` error comes per missing key, each naming the whole list: keep one of each.
    return list(dict.fromkeys(problems))


def _problems_from(error: ValidationError) -> list[Problem]:
    path = tuple(error.absolute_path)
    kind = error.validator
    value = error.instance
    hint = error.schema.get("x-hint") if isinstance(error.schema, dict) else None

    def with_hint(message: str) -> str:
        return f"{message}; {hint}" if hint else message

    if "propertyNames" in error.absolute_schema_path:
        # The error is about the key itself, so the problem is placed at that key.
        return [Problem((*path, value), with_hint(f"key name {show(value)} is not allowed"))]
    if kind == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        out = []
        for key in sorted(set(value) - set(known)):
            if not known:
                msg = "unknown key; this section takes no settings, remove it"
            else:
                close = difflib.get_close_matches(key, known, n=1)
                guess = f"did you mean {close[0]!r}? " if close else ""
                msg = f"unknown key; {guess}known keys here: {', '.join(known)}"
            out.append(Problem((*path, key), msg))
        return out
    if kind == "required":
        out = []
        props = error.schema.get("properties", {})
        for key in error.validator_value:
            if isinstance(value, dict) and key not in value:
                about = props.get(key, {}).get("description", "").split(". ")[0].rstrip(".")
                msg = "required key is missing; add it" + (f" ({about})" if about else "")
                out.append(Problem((*path, key), msg))
        return out
    if kind == "type":
        wanted = error.validator_value
        wanted = wanted if isinstance(wanted, list) else [wanted]
        words = " or ".join(_TYPE_WORDS[w] for w in wanted)
        msg = f"expected {words}, got {type_word(value)} {show(value)}"
        if isinstance(value, bool) and "string" in wanted:
            msg += " (YAML reads yes/no/on/off/true/false as true or false: quote the text)"
        if isinstance(value, str) and {"number", "integer"} & set(wanted) and _numeric(value):
            msg += " (remove the quotes)"
        return [Problem(path, with_hint(msg))]
    if kind == "enum":
        choices = ", ".join(show(v) for v in error.validator_value)
        return [Problem(path, f"{show(value)} is not allowed; use one of: {choices}")]
    if kind == "const":
        return [Problem(path, f"must be {show(error.validator_value)}, not {show(value)}")]
    if kind == "pattern":
        return [Problem(path, with_hint(f"{show(value)} is not valid"))]
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        rule = {
            "minimum": "at least",
            "exclusiveMinimum": "more than",
            "maximum": "at most",
            "exclusiveMaximum": "less than",
        }[kind]
        return [Problem(path, f"must be {rule} {show(error.validator_value)}, not {show(value)}")]
    if kind == "minItems":
        n = error.validator_value
        return [Problem(path, with_hint(f"needs at least {n} item{'s' if n != 1 else ''}"))]
    if kind == "uniqueItems":
        seen, repeated = [], []
        for item in value:
            (repeated if item in seen else seen).append(item)
        return [Problem(path, f"lists {show(repeated[0])} more than once; remove the repeats")]
    if kind == "minLength":
        return [Problem(path, "must not be empty")]
    if kind == "minProperties":
        return [Problem(path, with_hint("must not be empty"))]
    if kind == "maxProperties":
        keys = ", ".join(sorted(value))
        return [Problem(path, with_hint(f"takes one key, got several ({keys})"))]
    if kind == "contains":
        return [Problem(path, with_hint(f"{show(value)} lacks a required item"))]
    return [Problem(path, with_hint(error.message))]

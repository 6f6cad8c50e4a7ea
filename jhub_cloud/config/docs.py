"""docs/configuration.md, generated from schema.yaml so the reference cannot drift from the code."""

from __future__ import annotations

import re

import yaml

from .schema import load_schema, resolve

HEADER = (
    "<!-- Generated from jhub_cloud/config/schema.yaml by `jhub-cloud docs-config`; "
    "do not edit by hand. -->"
)


def reference_markdown() -> str:
    root = load_schema()
    lines = [
        HEADER,
        "",
        "# Configuration reference",
        "",
        _one_line(root["description"]),
        "",
        "A full example is `config/examples/full.yaml`; there is one per backend next to it.",
        "`jhub-cloud explain CONFIG --groups a,b` shows what a member of those groups gets.",
        "",
        "Keys not listed here are errors. Keys with a default may be left out.",
        "",
    ]
    sections: list[tuple[str, dict, list[str]]] = []
    _collect("", root, sections)
    lines += ["## Sections", ""]
    lines += ["- [Top level](#top-level)"]
    lines += [f"- [`{path}`](#{_anchor(path)})" for path, _, _ in sections[1:]]
    lines += ["- [Value types](#value-types)", ""]
    for path, node, required in sections:
        lines += _section(path, node, required)
    lines += ["## Value types", ""]
    for name, node in root["$defs"].items():
        lines += _value_type(name, node)
    return "\n".join(lines).rstrip() + "\n"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _anchor(text: str) -> str:
    # GitHub's rule: lower-case, drop punctuation except - and _, spaces become -.
    return re.sub(r"[^a-z0-9 _-]", "", text.lower()).replace(" ", "-")


def _collect(path: str, node: dict, out: list, container: str = "") -> None:
    """Every mapping that has its own keys becomes a section, parents before children.

    A mapping inside a list or keyed by name also carries its container's description, which
    holds the rules for the whole list (such as how groups combine).
    """
    if "$ref" in node:
        return  # a shared value type, documented once under "Value types"
    props = node.get("properties")
    if props is not None:
        described = {**node, "description": f"{container} {node.get('description', '')}"}
        out.append((path, described, node.get("required", [])))
        for key, sub in props.items():
            _collect(f"{path}.{key}" if path else key, sub, out)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        _collect(f"{path}.<name>", extra, out, node.get("description", ""))
    items = node.get("items")
    if isinstance(items, dict) and node.get("type") == "array":
        _collect(f"{path}[]", items, out, node.get("description", ""))


def _section(path: str, node: dict, required: list[str]) -> list[str]:
    if not path:
        lines = ["## Top level", "", "The file is a mapping of these sections.", ""]
    else:
        lines = [f"## `{path}`", "", _one_line(node.get("description", "")), ""]
    props = node.get("properties", {})
    if not props:
        return [*lines, "Takes no settings: write `{}`.", ""]
    lines += ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for key, sub in props.items():
        default = "required" if key in required else _default(sub)
        text = _one_line(resolve(sub).get("description", "")) + _rules(sub)
        lines.append(f"| `{key}` | {_type(sub, f'{path}.{key}')} | {default} | {text} |")
    return [*lines, ""]


def _default(node: dict) -> str:
    node = resolve(node)
    if "default" not in node:
        return "—"
    text = yaml.safe_dump(node["default"], default_flow_style=True, width=1000).strip()
    return f"`{text.removesuffix('...').strip()}`"


def _type(node: dict, path: str) -> str:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        target = load_schema()["$defs"][name]
        words = f"[{target['title']}](#{_anchor(target['title'])})"
        options = node.get("properties", {}).get("options", {}).get("items")
        if options:
            words += f" of {_type(options, path)}"
        if node.get("type") and "null" in node["type"]:
            words += " or null"
        return words
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "array" in kinds:
        items = node.get("items", {})
        inner = f"[mapping](#{_anchor(path + '[]')})" if "properties" in items else _type(items, path)
        return f"list of {inner}"
    if "object" in kinds:
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and "properties" in extra:
            return f"mapping of name to [mapping](#{_anchor(path + '.<name>')})"
        if isinstance(extra, dict):
            return f"mapping of text to {_type(extra, path)}"
        return f"[mapping](#{_anchor(path)})"
    words = {"string": "text", "integer": "whole number", "number": "number", "boolean":
             "true/false", "null": "null", None: "any"}
    return " or ".join(words[k] for k in kinds)


def _rules(node: dict) -> str:
    """Constraints worth reading, in words."""
    node = resolve(node)
    rules = []
    if "minimum" in node:
        rules.append(f"At least {node['minimum']}.")
    if "exclusiveMinimum" in node:
        rules.append(f"More than {node['exclusiveMinimum']}.")
    if node.get("minItems"):
        rules.append(f"At least {node['minItems']} item{'s' if node['minItems'] > 1 else ''}.")
    if node.get("uniqueItems"):
        rules.append("No repeats.")
    hint = node.get("x-hint") or node.get("items", {}).get("x-hint")
    if hint and "pattern" in node | node.get("items", {}):
        rules.append(f"Format: {hint}.")
    return (" " + " ".join(rules)) if rules else ""


def _value_type(name: str, node: dict) -> list[str]:
    lines = [f"### {node['title']}", "", _one_line(node["description"]) + _rules(node), ""]
    props = node.get("properties", {})
    if props:
        lines += ["| Key | Type | Description |", "|---|---|---|"]
        for key, sub in props.items():
            text = _one_line(sub.get("description", "")) + _rules(sub)
            lines.append(f"| `{key}` | {_type(sub, name)} | {text} |")
        lines.append("")
    return lines

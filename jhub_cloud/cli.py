"""`jhub-cloud`: the admin command. Subcommands: check, explain, docs-config.

A later subcommand adds itself with one entry in COMMANDS: (name, help, add_arguments, run);
`run(args)` returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from .config import Config, ConfigError, load, reference_markdown, secret_problems
from .policy import explain


def _load_or_report(path: str, as_json: bool) -> Config | None:
    """The configuration, or None after printing its problems (as JSON if asked)."""
    try:
        return load(path)
    except ConfigError as error:
        if as_json:
            print(json.dumps(_check_result(path, error.problems), indent=2))
        else:
            print(f"{error}\nFix these first (`jhub-cloud check {path}`).", file=sys.stderr)
        return None


def _check_result(path: str, problems) -> dict:
    return {"ok": not problems, "source": path, "problems": [p.to_dict() for p in problems]}


# check --------------------------------------------------------------------------------------


def _check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the configuration file (YAML)")
    p.add_argument(
        "--secrets",
        action="store_true",
        help="also read every secret reference (environment variables, files and their modes)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _check(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
        problems = secret_problems(cfg) if args.secrets else []
    except ConfigError as error:
        cfg, problems = None, error.problems
    if args.json:
        print(json.dumps(_check_result(args.config, problems), indent=2))
    elif problems:
        print(ConfigError(problems, args.config))
    else:
        print(
            f"{args.config}: OK ({_count(cfg.profiles, 'profile')}, {_count(cfg.groups, 'group')}; "
            f"backends: {', '.join(cfg.backends)})"
        )
    return 1 if problems else 0


def _count(items, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


# explain ------------------------------------------------------------------------------------


def _explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the configuration file (YAML)")
    p.add_argument(
        "--groups",
        required=True,
        help="the user's groups, comma separated, as the login sees them after group_rename "
        '(e.g. physics,cms; "" for none)',
    )
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")


def _explain(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config, args.json)
    if cfg is None:
        return 1
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    result = explain(cfg, groups)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(explanation_text(result))
    return 0


def explanation_text(result: dict) -> str:
    """The explanation for people: each profile and limit with the group that gave it."""
    lines = [f"Groups: {', '.join(result['groups']) or 'none'}"]
    if result["ignored_groups"]:
        lines.append(
            f"  ignored (not in auth.allowed_groups): {', '.join(result['ignored_groups'])}"
        )
    if not result["can_log_in"]:
        lines.append("Can log in: no (no group in auth.allowed_groups); this user gets nothing.")
        return "\n".join(lines)
    admin = result["admin"]
    lines.append("Can log in: yes")
    lines.append(f"Admin: yes, from {admin['from']}" if admin["value"] else "Admin: no")
    lines.append("")
    if not result["limits"]:
        lines.append("Limits: none of these groups has limits under `groups`, so no profiles.")
    else:
        lines.append("Totals, all running servers together (each the largest over the user's groups):")
        for name, limit in result["limits"].items():
            lines.append(f"  {name:<12} {limit['value']!s:<6} from {limit['from']}")
    lines.append("")
    lines.append("Profiles:" if result["profiles"] else "Profiles: none")
    for profile in result["profiles"]:
        others = profile["granted_by"][1:]
        also = f"; also {', '.join(others)}" if others else ""
        lines.append(
            f"  {profile['name']}: {profile['display_name']} "
            f"(backend {profile['backend']}, from {profile['from']}{also})"
        )
        limits = [f"{k} {v['value']} ({v['from']})" for k, v in profile["limits"].items()]
        if limits:
            lines.append(f"      limits      {', '.join(limits)}")
        for name, choice in profile["choices"].items():
            shown = [f"{o}*" if o == choice["default"] else str(o) for o in choice["options"]]
            lines.append(f"      {name:<11} {', '.join(shown)}")
        for mount in profile["mounts"]:
            ro = " (read-only)" if mount["read_only"] else ""
            ro += f" (group {mount['group']})" if mount.get("group") else ""
            lines.append(f"      mount       {mount['path']} <- bucket {mount['bucket']}{ro}")
        for key, value in profile["environment"].items():
            lines.append(f"      environment {key}={value}")
    if result["profiles"]:
        lines.append("  (* marks the default)")
    if result["unavailable_profiles"]:
        lines.append("")
        lines.append("Not offered (a group allows them, the limits leave no choice):")
        for item in result["unavailable_profiles"]:
            lines.append(f"  {item['name']}: {item['reason']}")
    lines += ["", f"Rule: {result['rule']}"]
    return "\n".join(lines)


# docs-config --------------------------------------------------------------------------------


def _docs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", help="write to this file instead of standard output")


def _docs(args: argparse.Namespace) -> int:
    text = reference_markdown()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[..., int]]
COMMANDS: list[Command] = [
    ("check", "validate a configuration file and list every problem", _check_arguments, _check),
    (
        "explain",
        "show the profiles and limits a user with given groups gets, and which group gave each",
        _explain_arguments,
        _explain,
    ),
    (
        "docs-config",
        "print the configuration reference (docs/configuration.md) generated from the schema",
        _docs_arguments,
        _docs,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jhub-cloud", description="Administer a jhub-cloud hub's configuration."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add_arguments, run in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

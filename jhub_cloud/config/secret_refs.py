"""Secrets named by reference in the configuration: `{env: NAME}` or `{file: /path}`.

A secret file must be private to the hub's user: group or others access is refused, since a
readable client secret or crypt key lets anyone impersonate the hub or read users' tokens.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from sts_wire.core.secretfile import SecretFileError, read_secret_file

from .errors import PathPart, Problem, SecretError
from .model import Config


def _parts(key: str | tuple[PathPart, ...]) -> tuple[PathPart, ...]:
    return tuple(key.split(".")) if isinstance(key, str) else tuple(key)


def resolve_secret(ref: Mapping, key: str | tuple[PathPart, ...] = "secret") -> str:
    """The secret's text. Raises SecretError naming `key` (e.g. "auth.client_secret")."""
    parts = _parts(key)

    def fail(message: str) -> SecretError:
        return SecretError([Problem(parts, message)])

    if not isinstance(ref, Mapping) or len(ref) != 1 or not ({"env", "file"} & set(ref)):
        raise fail("not a secret reference; write {env: NAME} or {file: /path/to/secret}")
    if "env" in ref:
        name = ref["env"]
        value = os.environ.get(name)
        if value is None:
            raise fail(
                f"environment variable {name} is not set; set it in the hub's environment "
                "(e.g. its systemd unit) or use {file: /path} instead"
            )
        if not value.strip():
            raise fail(f"environment variable {name} is empty; set it to the secret")
        return value
    return _read_secret_file(ref["file"], fail)


def _read_secret_file(path: str, fail) -> str:
    try:
        return read_secret_file(path, owner_hint="the hub's user")
    except SecretFileError as exc:
        raise fail(str(exc)) from None


def secret_problems(config: Config) -> list[Problem]:
    """What is wrong with each secret the configuration names (empty when all can be read)."""
    problems: list[Problem] = []
    for key, ref in config.secret_refs().items():
        try:
            resolve_secret(ref, key)
        except SecretError as exc:
            problems.extend(exc.problems)
    return problems

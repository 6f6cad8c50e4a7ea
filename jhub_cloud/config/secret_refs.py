"""Secrets named by reference in the configuration: `{env: NAME}` or `{file: /path}`.

A secret file must be private to the hub's user: group or others access is refused, since a
readable client secret or crypt key lets anyone impersonate the hub or read users' tokens.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

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
        # Open first, then check the opened file: no window to swap it between check and read.
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise fail(f"file {path} does not exist; create it (mode 600) or fix the path") from None
    except PermissionError:
        raise fail(
            f"file {path} cannot be read by this user; make the hub's user its owner "
            f"(chown) with mode 600"
        ) from None
    except OSError as exc:
        raise fail(f"file {path} cannot be opened: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise fail(f"{path} is not a regular file; point to the file holding the secret")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise fail(
                f"file {path} is open to group or others (mode {mode:04o}); "
                f"run: chmod 600 {path}"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read()
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise fail(f"file {path} is not UTF-8 text; write the secret as text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text.strip():
        raise fail(f"file {path} is empty; write the secret into it")
    return text


def secret_problems(config: Config) -> list[Problem]:
    """What is wrong with each secret the configuration names (empty when all can be read)."""
    problems: list[Problem] = []
    for key, ref in config.secret_refs().items():
        try:
            resolve_secret(ref, key)
        except SecretError as exc:
            problems.extend(exc.problems)
    return problems

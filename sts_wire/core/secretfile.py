"""Read a secret from a file only when the file is private (mode 600 or stricter): a client
secret, crypt key or refresh token readable by others is a leak. Both halves use this."""

from __future__ import annotations

import os
import stat


class SecretFileError(Exception):
    """The file cannot be used; the message says why and what to do (never the secret)."""


def read_secret_file(path: str | os.PathLike, owner_hint: str = "this user", allow_empty: bool = False) -> str:
    """The file's text without its final newline. Raises SecretFileError when it is missing,
    unreadable, not a regular file, open to group or others, not UTF-8 text, or (unless
    ``allow_empty``) empty."""
    path = os.fspath(path)
    try:
        # Open first, then check the opened file: no window to swap it between check and read.
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
    except FileNotFoundError:
        raise SecretFileError(f"file {path} does not exist; create it (mode 600) or fix the path") from None
    except PermissionError:
        raise SecretFileError(f"file {path} cannot be read by {owner_hint}; make {owner_hint} its owner "
                              "(chown) with mode 600") from None
    except OSError as exc:
        raise SecretFileError(f"file {path} cannot be opened: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretFileError(f"{path} is not a regular file; point to the file holding the secret")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise SecretFileError(f"file {path} is open to group or others (mode {mode:04o}); "
                                  f"run: chmod 600 {path}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read()
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(f"file {path} is not UTF-8 text; write the secret as text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text.strip() and not allow_empty:
        raise SecretFileError(f"file {path} is empty; write the secret into it")
    return text

"""``pybuild login``: get the credentials (flags, stdin or a terminal prompt), check
them against the registry's ``/v2/``, and say plainly when it refuses them.

As ``docker login`` (docker/cli ``cli/command/registry/login.go`` and
``cli/command/registry.go`` ``PromptUserForCredentials``): no prompt without a
terminal ("Cannot perform an interactive login from a non TTY device"),
``--password-stdin`` needs ``--username``, and a refusal is ``unauthorized:`` with
the registry's own message, never advice to run the command that just failed.
"""

from __future__ import annotations

import re
from typing import TextIO

from builder.errors import RegistryError, Unauthorized, UsageError
from builder.registry.auth import Credentials

_CODE = re.compile(r"^[A-Z_]+: ")  # "UNAUTHORIZED: authentication required"


def read_credentials(username: str | None, password: str | None, password_stdin: bool,
                     stdin: TextIO) -> Credentials:
    """The username and password from the flags, stdin or a prompt on the terminal."""
    if password_stdin and password is not None:
        raise UsageError("--password and --password-stdin are mutually exclusive")
    if password_stdin:
        if not username:
            raise UsageError("--password-stdin needs --username (-u)")
        password = stdin.readline().rstrip("\n").rstrip("\r")
    elif password is None and not stdin.isatty():
        raise UsageError("cannot log in interactively: stdin is not a terminal; pass the "
                         "password on stdin with --password-stdin (and the user with -u), "
                         "e.g. echo \"$TOKEN\" | pybuild login -u USER --password-stdin "
                         "REGISTRY")
    if not username:
        username = _prompt(stdin)
    if password is None:
        import getpass

        password = getpass.getpass("Password: ")
    if not username or not password:
        raise UsageError("login needs a username and a password")
    return Credentials(username=username, password=password)


def _prompt(stdin: TextIO) -> str:
    if not stdin.isatty():
        raise UsageError("login needs -u USERNAME when stdin is not a terminal")
    try:
        return input("Username: ").strip()
    except EOFError:
        raise UsageError("login needs a username (-u USERNAME)") from None


def check_login(registry: str, creds: Credentials, insecure: list[str]) -> None:
    """Authenticate against the registry's ``/v2/`` with ``creds``, as docker login does."""
    from builder.registry.reference import Reference
    from builder.registry.transport import Transport

    transport = Transport(registry, Reference(registry, "x").api_host, insecure=insecure,
                          credentials=creds)
    try:
        transport.check_login()
    except Unauthorized as err:
        reason = "; ".join(_CODE.sub("", part) for part in err.reason.split("; ") if part)
        raise RegistryError(f"login to {registry} failed: unauthorized: "
                            f"{reason or 'the registry refused the username and password'}"
                            ) from None
    finally:
        transport.close()


def remember(registry: str, creds: Credentials) -> str:
    """Save ``creds`` (``save_login``); an unwritable config is one line, not a traceback."""
    from builder.registry.auth import config_paths, save_login

    try:
        return str(save_login(registry, creds))
    except OSError as err:
        raise UsageError(f"{config_paths()[0]}: cannot save the credentials: "
                         f"{err.strerror or err}") from None


def forget(registry: str) -> bool:
    """``remove_login``, with an unwritable config as one line."""
    from builder.registry.auth import config_paths, remove_login

    try:
        return remove_login(registry)
    except OSError as err:
        raise UsageError(f"{config_paths()[0]}: cannot remove the credentials: "
                         f"{err.strerror or err}") from None

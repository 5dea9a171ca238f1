"""BuildKit's ``SecretsUsedInArgOrEnv``: an ARG or ENV whose name looks like a secret.

The names are BuildKit's (``dockerfile2llb`` ``isSecretName``): a ``_``-separated
word among apikey, auth, credential(s), key, password, pword, passwd, secret, token,
unless another word says it is not one (public, file, version).  Builds print the
warning too (``build_warnings``), as BuildKit does: such a value ends up in the
image's config and history for anyone who pulls it; ``RUN --mount=type=secret`` is
the way to pass one.
"""

from __future__ import annotations

import re

from builder.dockerfile.commands import ArgCommand, EnvCommand
from builder.dockerfile.parser import LintWarning
from builder.dockerfile.stages import Dockerfile

RULE = "SecretsUsedInArgOrEnv"
_SECRET = re.compile(
    r"(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)",
    re.IGNORECASE,
)
_NOT_SECRET = re.compile(r"(?:_|^)(?:public|file|version)(?:_|$)", re.IGNORECASE)


def is_secret_name(key: str) -> bool:
    return bool(_SECRET.search(key)) and not _NOT_SECRET.search(key)


def secret_message(what: str, key: str) -> str:
    from builder.dockerfile.line_parsers import go_quote

    return f"Do not use ARG or ENV instructions for sensitive data ({what} {go_quote(key)})"


def build_warnings(df: Dockerfile) -> list[LintWarning]:
    """The rule's findings for a build: a name check only, no expansion, so it costs
    nothing on a cached rebuild; ``# check=skip=`` turns it off as for ``pybuild check``."""
    from builder.dockerfile.linter import RULES, _comment_config, check_config

    rule = next(r for r in RULES if r.name == RULE)
    base = check_config(df)
    out: list[LintWarning] = []
    for stage in df.stages:
        for cmd in stage.commands:
            if isinstance(cmd, ArgCommand):
                names = [("ARG", key) for key, _ in cmd.args]
            elif isinstance(cmd, EnvCommand):
                names = [("ENV", key) for key, _ in cmd.pairs]
            else:
                continue
            config = _comment_config(base, cmd.comments)
            if config.skip_all or RULE in config.skip:
                continue
            out.extend(LintWarning(RULE, cmd.line, secret_message(what, key), rule.url,
                                   rule.description)
                       for what, key in names if is_secret_name(key))
    return out

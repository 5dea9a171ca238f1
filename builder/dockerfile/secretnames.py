"""BuildKit's ``SecretsUsedInArgOrEnv``: an ARG or ENV whose name looks like a secret.

The names are BuildKit's (``dockerfile2llb`` ``isSecretName``): a ``_``-separated
word among apikey, auth, credential(s), key, password, pword, passwd, secret, token,
unless another word says it is not one (public, file, version).  Builds print the
warning too (``build_warnings``), as BuildKit does: such a value ends up in the
image's config and history for anyone who pulls it; ``RUN --mount=type=secret`` is
the way to pass one.
"""

from __future__ import annotations

from builder.dockerfile.commands import ArgCommand, EnvCommand
from builder.dockerfile.parser import LintWarning
from builder.dockerfile.stages import Dockerfile

RULE = "SecretsUsedInArgOrEnv"
# BuildKit's rule matches these as whole "_"-separated words of the name, any case
# (linter/ruleset.go: (?:_|^)(?:...)(?:_|$)); a set lookup says the same without
# compiling a regular expression on every build.
_SECRET_WORDS = frozenset({"apikey", "auth", "credential", "credentials", "key", "password",
                           "pword", "passwd", "secret", "token"})
_NOT_SECRET_WORDS = frozenset({"public", "file", "version"})


def is_secret_name(key: str) -> bool:
    words = set(key.lower().split("_"))
    return bool(words & _SECRET_WORDS) and not words & _NOT_SECRET_WORDS


def secret_message(what: str, key: str) -> str:
    from builder.dockerfile.line_parsers import go_quote

    return f"Do not use ARG or ENV instructions for sensitive data ({what} {go_quote(key)})"


def build_warnings(df: Dockerfile) -> list[LintWarning]:
    """The rule's findings for a build: a name check only, no expansion, so it costs
    nothing on a cached rebuild; ``# check=skip=`` turns it off as for ``pybuild check``."""
    found = [(cmd, names) for cmd, names in _named(df)
             if any(is_secret_name(key) for _, key in names)]
    if not found:
        return []   # the usual case: the linter (and its import) is not needed
    from builder.dockerfile.linter import RULES, _comment_config, check_config

    rule = next(r for r in RULES if r.name == RULE)
    base = check_config(df)
    out: list[LintWarning] = []
    for cmd, names in found:
        config = _comment_config(base, cmd.comments)
        if config.skip_all or RULE in config.skip:
            continue
        out.extend(LintWarning(RULE, cmd.line, secret_message(what, key), rule.url,
                               rule.description)
                   for what, key in names if is_secret_name(key))
    return out


def _named(df: Dockerfile) -> list[tuple[ArgCommand | EnvCommand, list[tuple[str, str]]]]:
    """Each ARG and ENV instruction with the names it declares."""
    out: list[tuple[ArgCommand | EnvCommand, list[tuple[str, str]]]] = []
    for stage in df.stages:
        for cmd in stage.commands:
            if isinstance(cmd, ArgCommand):
                out.append((cmd, [("ARG", key) for key, _ in cmd.args]))
            elif isinstance(cmd, EnvCommand):
                out.append((cmd, [("ENV", key) for key, _ in cmd.pairs]))
    return out

"""BuildKit's ``SecretsUsedInArgOrEnv``: an ARG or ENV whose name looks like a secret.

The names are BuildKit's (``dockerfile2llb`` ``isSecretName``): a ``_``-separated
word among apikey, auth, credential(s), key, password, pword, passwd, secret, token,
unless another word says it is not one (public, file, version).  Builds print the
warning too (in the lint summary, ``builder.lint.gate``), as BuildKit does: such a
value ends up in the image's config and history for anyone who pulls it;
``RUN --mount=type=secret`` is the way to pass one.
"""

from __future__ import annotations

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

"""The linter's static walk: every stage's instructions dispatched without running
anything, with the environment each one would see.

It records the findings that need that environment (UndefinedVar,
WorkdirRelativePath, JSONArgsRecommended, SecretsUsedInArgOrEnv, the EXPOSE rules,
MultipleInstructionsDisallowed) in ``LintContext.findings``; the rule table in
``builder.dockerfile.linter`` reads them from there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import msgspec

from builder.dockerfile.commands import (
    AddCommand,
    ArgCommand,
    CmdCommand,
    Command,
    CopyCommand,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthcheckCommand,
    LabelCommand,
    RunCommand,
    ShellCommand,
    StopsignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
)
from builder.dockerfile.flags import suggest
from builder.dockerfile.line_parsers import go_quote
from builder.dockerfile.mounts import csv_fields
from builder.dockerfile.secretnames import is_secret_name, secret_message
from builder.dockerfile.stages import Dockerfile, Stage

if TYPE_CHECKING:   # the lexer loads on first lint only
    from builder.dockerfile.expand import ExpandResult, ShellLex

__all__ = ["Finding", "LintContext", "lint_expand", "walk_stages"]

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})

Finding = tuple[int, str]  # (line, message)


class _StageState(msgspec.Struct):
    """What the static walk of one stage learned (inherited by stages built on it)."""

    env: dict[str, str]
    declared: set[str] = msgspec.field(default_factory=set)
    has_shell: bool = False
    workdir_set: bool = False


class LintContext(msgspec.Struct):
    df: Dockerfile
    global_env: dict[str, str]
    declared_meta: set[str]
    build_args: Mapping[str, str]
    image_env: Mapping[str, Mapping[str, str]]
    findings: dict[str, list[Finding]] = msgspec.field(default_factory=dict)

    def report(self, rule: str, line: int, message: str) -> None:
        self.findings.setdefault(rule, []).append((line, message))


def _lex(escape: str, **opts: bool) -> ShellLex:
    from builder.dockerfile.expand import ShellLex  # loaded on first lint only

    return ShellLex(escape, **opts)


def lint_expand(ctx: LintContext, word: str, env: Mapping[str, str],
            raw: bool = False) -> ExpandResult | None:
    from builder.dockerfile.expand import ExpansionError

    lex = _lex("\\", skip_process_quotes=True) if raw else _lex(ctx.df.escape)
    try:
        return lex.process_word_with_matches(word, env)
    except ExpansionError:
        return None


def walk_stages(ctx: LintContext) -> None:
    """Dispatch every stage statically, recording the findings that need the
    environment (UndefinedVar, WorkdirRelativePath, JSONArgsRecommended, ...)."""
    states: dict[str, _StageState] = {}
    for st in ctx.df.stages:
        base = lint_expand(ctx, st.base, ctx.global_env)
        base_name = base.result if base else st.base
        parent = states.get(base_name)
        if parent is not None:
            state = _StageState(dict(parent.env), set(parent.declared), parent.has_shell,
                                parent.workdir_set)
        else:
            env = {"PATH": _DEFAULT_PATH, **ctx.image_env.get(base_name, {})}
            state = _StageState(env)
        _walk_stage(ctx, st, state)
        if st.name:
            states[st.name] = state


def _undefined(ctx: LintContext, cmd: Command, state: _StageState,
               res: ExpandResult | None) -> None:
    if res is None:
        return
    for name in sorted(res.unmatched - state.declared - _NON_ENV_ARGS):
        match = suggest(name, state.env, True)
        msg = f"Usage of undefined variable '${name}'"
        ctx.report("UndefinedVar", cmd.line, msg + (f" (did you mean ${match}?)" if match else ""))


def _walk_stage(ctx: LintContext, st: Stage, state: _StageState) -> None:
    used: dict[str, int] = {}
    for cmd in st.commands:
        env = state.env

        def word(w: str, raw: bool = False, cmd: Command = cmd, env: dict[str, str] = env) -> str:
            res = lint_expand(ctx, w, env, raw)
            _undefined(ctx, cmd, state, res)
            return res.result if res else w

        if isinstance(cmd, ArgCommand):
            for key, default in cmd.args:
                _secret(ctx, cmd, "ARG", key)
                value = ctx.build_args.get(key)
                if value is None and default is not None:
                    value = word(default)
                elif value is None:
                    value = ctx.global_env.get(key)
                state.declared.add(key)
                if value is not None:
                    env[key] = value
        elif isinstance(cmd, EnvCommand):
            for key, value in cmd.pairs:
                key = word(key)
                _secret(ctx, cmd, "ENV", key)
                env[key] = word(value)
        elif isinstance(cmd, WorkdirCommand):
            path = word(cmd.path)
            if not state.workdir_set and not path.startswith("/"):
                ctx.report("WorkdirRelativePath", cmd.line,
                           f"Relative workdir {go_quote(path)} can have unexpected results "
                           "if the base image changes")
            state.workdir_set = True
        elif isinstance(cmd, ExposeCommand):
            _check_expose(ctx, cmd, env)
        elif isinstance(cmd, ShellCommand):
            state.has_shell = True
        else:
            _expand_words(cmd, word)
        shell_form = isinstance(cmd, CmdCommand | EntrypointCommand) and cmd.shell_form
        if shell_form and not state.has_shell:
            ctx.report("JSONArgsRecommended", cmd.line,
                       f"JSON arguments recommended for {cmd.name} to prevent unintended "
                       "behavior related to OS signals")
        if isinstance(cmd, CmdCommand | EntrypointCommand | HealthcheckCommand):
            if cmd.keyword in used:
                ctx.report("MultipleInstructionsDisallowed", used[cmd.keyword],
                           f"Multiple {cmd.name} instructions should not be used in the same "
                           "stage because only the last one will be used")
            used[cmd.keyword] = cmd.line


def _expand_words(cmd: Command, word: Callable[..., str]) -> None:
    """Expand, for UndefinedVar only, the words BuildKit expands in an instruction
    whose values the walk does not keep."""
    if isinstance(cmd, LabelCommand):
        for key, value in cmd.pairs:
            word(key)
            word(value)
    elif isinstance(cmd, CopyCommand | AddCommand):
        for w in (*cmd.sources, cmd.dest, cmd.chown or "", cmd.chmod or ""):
            word(w)
        if isinstance(cmd, AddCommand) and cmd.checksum:
            word(cmd.checksum)
        for doc in cmd.source_heredocs:
            if doc.expand:
                word(doc.content, raw=True)
    elif isinstance(cmd, UserCommand | StopsignalCommand):
        word(cmd.user if isinstance(cmd, UserCommand) else cmd.signal)
    elif isinstance(cmd, VolumeCommand):
        for p in cmd.paths:
            word(p)
    elif isinstance(cmd, RunCommand):
        for m in cmd.mounts:
            for fld in _mount_values(m.raw):
                word(fld)


def _secret(ctx: LintContext, cmd: Command, what: str, key: str) -> None:
    if is_secret_name(key):
        ctx.report("SecretsUsedInArgOrEnv", cmd.line, secret_message(what, key))


def _mount_values(raw: str) -> list[str]:
    try:
        return [f.partition("=")[2] for f in csv_fields(raw) if "=" in f]
    except ValueError:
        return []


def _check_expose(ctx: LintContext, cmd: ExposeCommand, env: Mapping[str, str]) -> None:
    from builder.dockerfile.expand import ExpansionError

    lex = _lex(ctx.df.escape)
    for raw in cmd.ports:
        try:
            ports = lex.process_words(raw, env)
        except ExpansionError:  # fails the build, not the lint
            continue
        for port in ports:
            parts = port.split(":")
            proto = parts[-1].partition("/")[2]
            if proto != proto.lower():
                ctx.report("ExposeProtoCasing", cmd.line,
                           f"Defined protocol '{port}' in EXPOSE instruction should be lowercase")
            if len(parts) > 1:
                ctx.report("ExposeInvalidFormat", cmd.line,
                           "EXPOSE instruction should not define an IP address or host-port "
                           f"mapping, found '{port}'")

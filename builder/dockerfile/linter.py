"""Dockerfile lint rules with BuildKit's names, messages and documentation links.

The rules are a table, as in BuildKit's ``linter/ruleset.go``: each row has a
name, description, URL and a check function over the parsed Dockerfile. The
``# check=skip=A,B`` directive (at the top, or as a comment right above an
instruction) turns rules off, ``# check=experimental=...`` turns experimental
ones on.

Upstream runs most checks while it builds, with the base image's environment
at hand. Here they run statically: variables an image defines are unknown
unless ``image_env`` supplies them, so ``UndefinedVar`` only assumes ``PATH``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

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
    MaintainerCommand,
    RunCommand,
    ShellCommand,
    StopsignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
)
from builder.dockerfile.directives import CheckConfig, DirectiveParser, parse_check_options
from builder.dockerfile.flags import suggest
from builder.dockerfile.mounts import csv_fields
from builder.dockerfile.parser import LintWarning
from builder.dockerfile.secretnames import is_secret_name, secret_message
from builder.dockerfile.stages import Dockerfile, Platform, Stage, valid_reference

__all__ = ["RULES", "LintWarning", "Rule", "check_config", "lint"]

_DOCS = "https://docs.docker.com/go/dockerfile/rule/"
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})

Finding = tuple[int, str]  # (line, message)


@dataclass
class _StageState:
    """What the static walk of one stage learned (inherited by stages built on it)."""

    env: dict[str, str]
    declared: set[str] = field(default_factory=set)
    has_shell: bool = False
    workdir_set: bool = False


@dataclass
class _Context:
    df: Dockerfile
    global_env: dict[str, str]
    declared_meta: set[str]
    build_args: Mapping[str, str]
    image_env: Mapping[str, Mapping[str, str]]
    findings: dict[str, list[Finding]] = field(default_factory=dict)

    def report(self, rule: str, line: int, message: str) -> None:
        self.findings.setdefault(rule, []).append((line, message))


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    url: str
    check: Callable[[_Context], Iterator[Finding]]
    experimental: bool = False


def _lex(escape: str, **opts: bool):  # type: ignore[no-untyped-def]
    from builder.dockerfile.expand import ShellLex  # loaded on first lint only

    return ShellLex(escape, **opts)


def _expand(ctx: _Context, word: str, env: Mapping[str, str], raw: bool = False):  # type: ignore[no-untyped-def]
    from builder.dockerfile.expand import ExpansionError

    lex = _lex("\\", skip_process_quotes=True) if raw else _lex(ctx.df.escape)
    try:
        return lex.process_word_with_matches(word, env)
    except ExpansionError:
        return None


def _walk(ctx: _Context) -> None:
    """Dispatch every stage statically, recording the findings that need the
    environment (UndefinedVar, WorkdirRelativePath, JSONArgsRecommended, ...)."""
    states: dict[str, _StageState] = {}
    for st in ctx.df.stages:
        base = _expand(ctx, st.base, ctx.global_env)
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


def _undefined(ctx: _Context, cmd: Command, state: _StageState, res) -> None:  # type: ignore[no-untyped-def]
    if res is None:
        return
    for name in sorted(res.unmatched - state.declared - _NON_ENV_ARGS):
        match = suggest(name, state.env, True)
        msg = f"Usage of undefined variable '${name}'"
        ctx.report("UndefinedVar", cmd.line, msg + (f" (did you mean ${match}?)" if match else ""))


def _walk_stage(ctx: _Context, st: Stage, state: _StageState) -> None:
    used: dict[str, int] = {}
    for cmd in st.commands:
        env = state.env

        def word(w: str, raw: bool = False, cmd: Command = cmd, env: dict = env) -> str:
            res = _expand(ctx, w, env, raw)
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
        elif isinstance(cmd, LabelCommand):
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
        elif isinstance(cmd, WorkdirCommand):
            path = word(cmd.path)
            if not state.workdir_set and not path.startswith("/"):
                ctx.report("WorkdirRelativePath", cmd.line,
                           f"Relative workdir {_q(path)} can have unexpected results if the base "
                           "image changes")
            state.workdir_set = True
        elif isinstance(cmd, UserCommand | StopsignalCommand):
            word(cmd.user if isinstance(cmd, UserCommand) else cmd.signal)
        elif isinstance(cmd, VolumeCommand):
            for p in cmd.paths:
                word(p)
        elif isinstance(cmd, RunCommand):
            for m in cmd.mounts:
                for fld in _mount_values(m.raw):
                    word(fld)
        elif isinstance(cmd, ExposeCommand):
            _check_expose(ctx, cmd, env)
        elif isinstance(cmd, ShellCommand):
            state.has_shell = True
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


def _secret(ctx: _Context, cmd: Command, what: str, key: str) -> None:
    if is_secret_name(key):
        ctx.report("SecretsUsedInArgOrEnv", cmd.line, secret_message(what, key))


def _mount_values(raw: str) -> list[str]:
    try:
        return [f.partition("=")[2] for f in csv_fields(raw) if "=" in f]
    except ValueError:
        return []


def _check_expose(ctx: _Context, cmd: ExposeCommand, env: Mapping[str, str]) -> None:
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


def _q(s: str) -> str:
    from builder.dockerfile.line_parsers import go_quote

    return go_quote(s)


# --- checks that need no environment walk ----------------------------------------------


def _stage_name_casing(ctx: _Context) -> Iterator[Finding]:
    for st in ctx.df.stages:
        fc = st.from_command
        if fc is not None and len(fc.args) == 3 and fc.args[2] != fc.args[2].lower():
            yield fc.line, f"Stage name '{fc.args[2]}' should be lowercase"


def _stage_names(ctx: _Context) -> None:
    seen: set[str] = set()
    for st in ctx.df.stages:
        if st.name:
            if st.name in ("context", "scratch"):
                ctx.report("ReservedStageName", st.line,
                           f'Stage name should not use the same name as reserved stage "{st.name}"')
            if st.name in seen:
                ctx.report("DuplicateStageName", st.line,
                           f"Duplicate stage name {_q(st.name)}, stage names should be unique")
            seen.add(st.name)


def _from_as_casing(ctx: _Context) -> Iterator[Finding]:
    for st in ctx.df.stages:
        fc = st.from_command
        if fc is None or len(fc.args) < 3:
            continue
        lower, upper = fc.name == fc.name.lower(), fc.name == fc.name.upper()
        if (lower and fc.as_word != fc.as_word.lower()) or (
            upper and not lower and fc.as_word != fc.as_word.upper()
        ):
            yield fc.line, f"'{fc.as_word}' and '{fc.name}' keywords' casing do not match"


def _casing(ctx: _Context) -> Iterator[Finding]:
    names: list[tuple[int, str]] = []
    for st in ctx.df.stages:
        if st.from_command is not None:
            names.append((st.line, st.from_command.name))
        names.extend((c.line, c.name) for c in st.commands)
    consistent = [n for _, n in names if n in (n.lower(), n.upper())]
    lower = sum(1 for n in consistent if n == n.lower())
    majority_lower = lower > len(consistent) - lower
    want = "lowercase" if majority_lower else "uppercase"
    for line, name in names:
        if name != (name.lower() if majority_lower else name.upper()):
            yield line, f"Command '{name}' should match the case of the command majority ({want})"


def _each_command(ctx: _Context) -> Iterator[Command]:
    for st in ctx.df.stages:
        yield from st.commands


def _maintainer(ctx: _Context) -> Iterator[Finding]:
    for c in _each_command(ctx):
        if isinstance(c, MaintainerCommand):
            yield c.line, "Maintainer instruction is deprecated in favor of using label"


def _legacy_kv(ctx: _Context) -> Iterator[Finding]:
    for c in _each_command(ctx):
        if isinstance(c, EnvCommand | LabelCommand) and c.legacy_format:
            yield c.line, (
                f'"{c.name} key=value" should be used instead of legacy "{c.name} key value" format'
            )


def _from_args(ctx: _Context) -> None:
    """UndefinedArgInFrom, InvalidDefaultArgInFrom, RedundantTargetPlatform,
    FromPlatformFlagConstDisallowed: the FROM line against the global args."""
    keys = ctx.declared_meta | set(ctx.global_env)
    for st in ctx.df.stages:
        base = _expand(ctx, st.base, ctx.global_env)
        words = [base] if st.platform is None else [base, _expand(ctx, st.platform, ctx.global_env)]
        for res in words:
            for name in sorted(res.unmatched - keys) if res else ():
                match = suggest(name, keys, True)
                msg = f"FROM argument '{name}' is not declared"
                ctx.report("UndefinedArgInFrom", st.line,
                           msg + (f" (did you mean {match}?)" if match else ""))
        invalid = base is not None and base.result != "scratch" and not valid_reference(base.result)
        if invalid and not any(s.name == base.result for s in ctx.df.stages[: st.index]):
            ctx.report("InvalidDefaultArgInFrom", st.line,
                       f"Default value for ARG {st.base} results in empty or invalid base "
                       "image name")
        plat = words[1] if len(words) > 1 else None
        if plat is None or st.platform is None:
            continue
        only_target = plat.matched == {"TARGETPLATFORM"} and not plat.unmatched
        if only_target and plat.result == ctx.global_env["TARGETPLATFORM"]:
            ctx.report("RedundantTargetPlatform", st.line,
                       f"Setting platform to predefined {st.platform} in FROM is redundant "
                       "as this is the default behavior")
        if not plat.matched and not plat.unmatched:
            try:
                p = Platform.parse(plat.result)
            except ValueError:
                continue
            name = st.name or ""
            if p.os not in name and p.architecture not in name:
                ctx.report("FromPlatformFlagConstDisallowed", st.line,
                           f"FROM --platform flag should not use constant value {_q(plat.result)}")


def _definition_description(ctx: _Context) -> Iterator[Finding]:
    items: list[tuple[str, list[str], list[str], int]] = []
    for st in ctx.df.stages:
        if st.from_command is not None and st.name:
            items.append(("FROM", [st.name], st.from_command.comments, st.line))
        items.extend(("ARG", [k for k, _ in c.args], c.comments, c.line)
                     for c in st.commands if isinstance(c, ArgCommand))
    items.extend(("ARG", [k for k, _ in c.args], c.comments, c.line) for c in ctx.df.meta_args)
    for what, keys, comments, line in items:
        if comments and keys and comments[-1].split(" ")[0] not in keys:
            example = keys[0] if len(keys) == 1 else "<arg_key>"
            yield line, f"Comment for {what} should follow the format: `# {example} <description>`"


def _from_walk(rule: str) -> Callable[[_Context], Iterator[Finding]]:
    def check(ctx: _Context) -> Iterator[Finding]:
        yield from ctx.findings.get(rule, ())

    return check


def _empty_continuation(ctx: _Context) -> Iterator[Finding]:
    for w in ctx.df.warnings:
        if w.rule == "NoEmptyContinuation":
            yield w.line, "Empty continuation line"


RULES: tuple[Rule, ...] = (
    Rule("StageNameCasing", "Stage names should be lowercase",
         _DOCS + "stage-name-casing/", _stage_name_casing),
    Rule("FromAsCasing", "The 'as' keyword should match the case of the 'from' keyword",
         _DOCS + "from-as-casing/", _from_as_casing),
    Rule("NoEmptyContinuation", "Empty continuation lines will become errors in a future release",
         _DOCS + "no-empty-continuation/", _empty_continuation),
    Rule("ConsistentInstructionCasing",
         "All commands within the Dockerfile should use the same casing (either upper or lower)",
         _DOCS + "consistent-instruction-casing/", _casing),
    Rule("DuplicateStageName", "Stage names should be unique",
         _DOCS + "duplicate-stage-name/", _from_walk("DuplicateStageName")),
    Rule("ReservedStageName", "Reserved words should not be used as stage names",
         _DOCS + "reserved-stage-name/", _from_walk("ReservedStageName")),
    Rule("JSONArgsRecommended",
         "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related "
         "to OS signals", _DOCS + "json-args-recommended/", _from_walk("JSONArgsRecommended")),
    Rule("MaintainerDeprecated",
         "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
         _DOCS + "maintainer-deprecated/", _maintainer),
    Rule("UndefinedArgInFrom", "FROM command must use declared ARGs",
         _DOCS + "undefined-arg-in-from/", _from_walk("UndefinedArgInFrom")),
    Rule("WorkdirRelativePath",
         "Relative workdir without an absolute workdir declared within the build can have "
         "unexpected results if the base image changes",
         _DOCS + "workdir-relative-path/", _from_walk("WorkdirRelativePath")),
    Rule("UndefinedVar", "Variables should be defined before their use",
         _DOCS + "undefined-var/", _from_walk("UndefinedVar")),
    Rule("MultipleInstructionsDisallowed",
         "Multiple instructions of the same type should not be used in the same stage",
         _DOCS + "multiple-instructions-disallowed/",
         _from_walk("MultipleInstructionsDisallowed")),
    Rule("LegacyKeyValueFormat",
         "Legacy key/value format with whitespace separator should not be used",
         _DOCS + "legacy-key-value-format/", _legacy_kv),
    Rule("RedundantTargetPlatform",
         "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the "
         "default behavior", _DOCS + "redundant-target-platform/",
         _from_walk("RedundantTargetPlatform")),
    Rule("SecretsUsedInArgOrEnv", "Sensitive data should not be used in the ARG or ENV commands",
         _DOCS + "secrets-used-in-arg-or-env/", _from_walk("SecretsUsedInArgOrEnv")),
    Rule("InvalidDefaultArgInFrom",
         "Default value for global ARG results in an empty or invalid base image name",
         _DOCS + "invalid-default-arg-in-from/", _from_walk("InvalidDefaultArgInFrom")),
    Rule("FromPlatformFlagConstDisallowed", "FROM --platform flag should not use a constant value",
         _DOCS + "from-platform-flag-const-disallowed/",
         _from_walk("FromPlatformFlagConstDisallowed")),
    Rule("InvalidDefinitionDescription",
         "Comment for build stage or argument should follow the format: `# <arg/stage name> "
         "<description>`. If this is not intended to be a description comment, add an empty "
         "line or comment between the instruction and the comment.",
         _DOCS + "invalid-definition-description/", _definition_description, experimental=True),
    Rule("ExposeProtoCasing", "Protocol in EXPOSE instruction should be lowercase",
         _DOCS + "expose-proto-casing/", _from_walk("ExposeProtoCasing")),
    Rule("ExposeInvalidFormat",
         "IP address and host-port mapping should not be used in EXPOSE instruction. This will "
         "become an error in a future release",
         _DOCS + "expose-invalid-format/", _from_walk("ExposeInvalidFormat")),
)  # fmt: skip


def check_config(df: Dockerfile) -> CheckConfig:
    """The file's ``# check=`` directive (parse_text already rejected a bad one)."""
    value = df.directives.get("check", "")
    return parse_check_options(value.split(" ", 1)[0])


def _comment_config(base: CheckConfig, comments: list[str]) -> CheckConfig:
    for comment in comments:
        d = DirectiveParser(comment="").parse_line(comment)
        if d is None or d.name != "check":
            continue
        try:
            return base.merged(parse_check_options(d.value.split(" ", 1)[0]))
        except ValueError:
            return base
    return base


def lint(
    df: Dockerfile,
    *,
    build_args: Mapping[str, str] | None = None,
    image_env: Mapping[str, Mapping[str, str]] | None = None,
) -> list[LintWarning]:
    """Run every rule over all stages; warnings sorted by line.

    ``image_env`` maps a base image reference to its configured environment.
    """
    from builder.dockerfile.stages import _platform_args

    build_args = dict(build_args or {})
    env = _platform_args(Platform(), Platform(), df.stages[-1].name or "")
    env.update((k, v) for k, v in build_args.items() if k in env)
    declared: set[str] = set()
    ctx = _Context(df, env, declared, build_args, image_env or {})
    for cmd in df.meta_args:
        for key, default in cmd.args:
            declared.add(key)
            if key in build_args:
                env[key] = build_args[key]
            elif default is not None:
                res = _expand(ctx, default, env)
                if res is not None:
                    env[key] = res.result
    _stage_names(ctx)
    _from_args(ctx)
    _walk(ctx)
    comments = {c.line: c.comments for st in df.stages for c in st.commands}
    comments.update({st.line: st.from_command.comments for st in df.stages if st.from_command})
    base = check_config(df)
    out: list[LintWarning] = []
    for rule in RULES:
        for line, message in rule.check(ctx):
            config = _comment_config(base, comments.get(line, []))
            if rule.experimental:
                if not (config.experimental_all or rule.name in config.experimental):
                    continue
            elif config.skip_all or rule.name in config.skip:
                continue
            out.append(LintWarning(rule.name, line, message, rule.url, rule.description))
    out.sort(key=lambda w: w.line)
    return out


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

import msgspec

from builder.dockerfile.commands import (
    ArgCommand,
    Command,
    EnvCommand,
    LabelCommand,
    MaintainerCommand,
)
from builder.dockerfile.directives import CheckConfig, DirectiveParser, parse_check_options
from builder.dockerfile.flags import suggest
from builder.dockerfile.line_parsers import go_quote
from builder.dockerfile.lint_walk import Finding, LintContext, lint_expand, walk_stages
from builder.dockerfile.parser import LintWarning
from builder.dockerfile.stages import Dockerfile, Platform, valid_reference

__all__ = ["RULES", "LintWarning", "Rule", "check_config", "lint"]

_DOCS = "https://docs.docker.com/go/dockerfile/rule/"
class Rule(msgspec.Struct, frozen=True):
    name: str
    description: str
    url: str
    check: Callable[[LintContext], Iterator[Finding]]
    experimental: bool = False


# --- checks that need no environment walk ----------------------------------------------


def _stage_name_casing(ctx: LintContext) -> Iterator[Finding]:
    for st in ctx.df.stages:
        fc = st.from_command
        if fc is not None and len(fc.args) == 3 and fc.args[2] != fc.args[2].lower():
            yield fc.line, f"Stage name '{fc.args[2]}' should be lowercase"


def _stage_names(ctx: LintContext) -> None:
    seen: set[str] = set()
    for st in ctx.df.stages:
        if st.name:
            if st.name in ("context", "scratch"):
                ctx.report("ReservedStageName", st.line,
                           f'Stage name should not use the same name as reserved stage "{st.name}"')
            if st.name in seen:
                ctx.report("DuplicateStageName", st.line,
                           f"Duplicate stage name {go_quote(st.name)}, "
                           "stage names should be unique")
            seen.add(st.name)


def _from_as_casing(ctx: LintContext) -> Iterator[Finding]:
    for st in ctx.df.stages:
        fc = st.from_command
        if fc is None or len(fc.args) < 3:
            continue
        lower, upper = fc.name == fc.name.lower(), fc.name == fc.name.upper()
        if (lower and fc.as_word != fc.as_word.lower()) or (
            upper and not lower and fc.as_word != fc.as_word.upper()
        ):
            yield fc.line, f"'{fc.as_word}' and '{fc.name}' keywords' casing do not match"


def _casing(ctx: LintContext) -> Iterator[Finding]:
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


def _each_command(ctx: LintContext) -> Iterator[Command]:
    for st in ctx.df.stages:
        yield from st.commands


def _maintainer(ctx: LintContext) -> Iterator[Finding]:
    for c in _each_command(ctx):
        if isinstance(c, MaintainerCommand):
            yield c.line, "Maintainer instruction is deprecated in favor of using label"


def _legacy_kv(ctx: LintContext) -> Iterator[Finding]:
    for c in _each_command(ctx):
        if isinstance(c, EnvCommand | LabelCommand) and c.legacy_format:
            yield c.line, (
                f'"{c.name} key=value" should be used instead of legacy "{c.name} key value" format'
            )


def _from_args(ctx: LintContext) -> None:
    """UndefinedArgInFrom, InvalidDefaultArgInFrom, RedundantTargetPlatform,
    FromPlatformFlagConstDisallowed: the FROM line against the global args."""
    keys = ctx.declared_meta | set(ctx.global_env)
    for st in ctx.df.stages:
        base = lint_expand(ctx, st.base, ctx.global_env)
        words = [base]
        if st.platform is not None:
            words.append(lint_expand(ctx, st.platform, ctx.global_env))
        for res in words:
            for name in sorted(res.unmatched - keys) if res else ():
                match = suggest(name, keys, True)
                msg = f"FROM argument '{name}' is not declared"
                ctx.report("UndefinedArgInFrom", st.line,
                           msg + (f" (did you mean {match}?)" if match else ""))
        base_ref = base.result if base is not None else None
        invalid = base_ref is not None and base_ref != "scratch" and not valid_reference(base_ref)
        if invalid and not any(s.name == base_ref for s in ctx.df.stages[: st.index]):
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
                           "FROM --platform flag should not use constant value "
                           + go_quote(plat.result))


def _definition_description(ctx: LintContext) -> Iterator[Finding]:
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


def _from_walk(rule: str) -> Callable[[LintContext], Iterator[Finding]]:
    def check(ctx: LintContext) -> Iterator[Finding]:
        yield from ctx.findings.get(rule, ())

    return check


def _empty_continuation(ctx: LintContext) -> Iterator[Finding]:
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
    ctx = LintContext(df, env, declared, build_args, image_env or {})
    for cmd in df.meta_args:
        for key, default in cmd.args:
            declared.add(key)
            if key in build_args:
                env[key] = build_args[key]
            elif default is not None:
                res = lint_expand(ctx, default, env)
                if res is not None:
                    env[key] = res.result
    _stage_names(ctx)
    _from_args(ctx)
    walk_stages(ctx)
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


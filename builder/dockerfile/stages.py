"""Typed commands → build stages, and the plan of which stages a build needs.

``parse_text`` groups instructions under their ``FROM`` (ARGs before the first
FROM are the global "meta" args). ``plan_build`` then does what BuildKit's
``dockerfile2llb`` does before dispatching anything: it computes the global
args (platform args, meta ARGs, ``--build-arg``), expands every ``FROM``,
links stages (``FROM <stage>``, ``COPY --from``, ``RUN --mount=from=``, and
ONBUILD triggers of a stage used as a base) and keeps only what the target
reaches, dependencies first. Unused stages are never expanded past ``FROM``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

import msgspec

from builder.dockerfile.commands import ArgCommand, Command, CopyCommand, FromCommand, RunCommand
from builder.dockerfile.directives import (
    DirectiveError,
    detect_syntax,
    parse_check_options,
    parse_directive,
)
from builder.dockerfile.flags import with_suggestion
from builder.dockerfile.instructions import parse_instruction
from builder.dockerfile.parser import MAX_DOCKERFILE_BYTES, LintWarning, Node, decode_source, parse
from builder.errors import DockerfileError
from builder.platforms import Platform

if TYPE_CHECKING:   # the lexer loads only when a Dockerfile is planned
    from builder.dockerfile.expand import ExpandResult

__all__ = [
    "BuildPlan",
    "Dockerfile",
    "PlannedStage",
    "Platform",
    "Stage",
    "parse_file",
    "parse_text",
    "plan_build",
    "valid_reference",
]

PROXY_ARGS = frozenset(
    n for p in ("HTTP", "HTTPS", "FTP", "NO", "ALL") for n in (f"{p}_PROXY", f"{p.lower()}_proxy")
)
PLATFORM_ARGS = (
    "BUILDPLATFORM", "BUILDOS", "BUILDOSVERSION", "BUILDARCH", "BUILDVARIANT",
    "TARGETPLATFORM", "TARGETOS", "TARGETOSVERSION", "TARGETARCH", "TARGETVARIANT",
    "TARGETSTAGE",
)  # fmt: skip
# Read by the builder itself, so never reported as unused.
BUILTIN_ARGS = frozenset({*PROXY_ARGS, *PLATFORM_ARGS, "SOURCE_DATE_EPOCH"})


class Stage(msgspec.Struct):
    index: int
    name: str | None  # lower case
    base: str  # the FROM image word, unexpanded
    platform: str | None  # the --platform value, unexpanded
    line: int
    commands: list[Command] = msgspec.field(default_factory=list)
    original: str = ""
    from_command: FromCommand | None = None
    doc_comment: str = ""

    @property
    def display_name(self) -> str:
        return self.name or f"stage-{self.index}"


class Dockerfile(msgspec.Struct):
    path: str
    escape: str
    directives: dict[str, str]
    meta_args: list[ArgCommand]
    stages: list[Stage]
    warnings: list[LintWarning]
    nodes: list[Node] = msgspec.field(default_factory=list)

    def stage(self, name: str) -> Stage | None:
        """The last stage named ``name`` (case-insensitive), as upstream resolves names."""
        found = None
        for st in self.stages:
            if st.name is not None and st.name == name.lower():
                found = st
        return found


def _doc_comment(comments: list[str], name: str | None) -> str:
    if not name:
        return ""
    for line in comments:
        if line.startswith(name + " "):
            return line[len(name) + 1 :]
    return ""


def parse_text(text: str | bytes, path: str = "Dockerfile") -> Dockerfile:
    """Parse a whole Dockerfile into stages. Raises DockerfileError."""
    if len(text) == 0:
        raise DockerfileError("the Dockerfile cannot be empty", path)
    source = decode_source(text, path)
    result = parse(source, path)
    directives = {d.name: d.value for d in result.directives}
    # BuildKit reads syntax and check with its own scan (which skips a shebang).
    _, syntax, _, found = detect_syntax(source)
    if found:
        directives["syntax"] = syntax
    _, check, _, found = parse_directive("check", source)
    if found:
        directives["check"] = check
    if "check" in directives:
        try:
            parse_check_options(directives["check"].split(" ", 1)[0])
        except DirectiveError as err:
            raise DockerfileError(f"failed to parse check options: {err}", path, 1) from None
    meta: list[ArgCommand] = []
    stages: list[Stage] = []
    for node in result.nodes:
        cmd = parse_instruction(node, path)
        if isinstance(cmd, FromCommand):
            stages.append(
                Stage(
                    index=len(stages),
                    name=cmd.stage_name,
                    base=cmd.base,
                    platform=cmd.platform,
                    line=cmd.line,
                    original=cmd.original,
                    from_command=cmd,
                    doc_comment=_doc_comment(cmd.comments, cmd.stage_name),
                )
            )
        elif not stages and isinstance(cmd, ArgCommand):
            meta.append(cmd)
        elif not stages:
            raise DockerfileError("no build stage in current context", path, cmd.line)
        else:
            stages[-1].commands.append(cmd)
    if not stages:
        raise DockerfileError("dockerfile contains no stages to build", path, result.end_line)
    return Dockerfile(path, result.escape, directives, meta, stages, result.warnings, result.nodes)


MAX_READ = MAX_DOCKERFILE_BYTES + 1  # one byte over the limit, so parse reports it


def parse_file(path: str | os.PathLike[str]) -> Dockerfile:
    """Read and parse a Dockerfile; a missing or unreadable file is a DockerfileError."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read(MAX_READ)
    except OSError as err:
        raise DockerfileError(f"cannot read Dockerfile: {err.strerror}", name) from None
    return parse_text(data, name)


# --- the build plan --------------------------------------------------------------


class PlannedStage(msgspec.Struct):
    stage: Stage
    base: str  # the expanded FROM word: an image reference, "scratch" or a stage name
    base_stage: int | None  # index of the stage used as base, if any
    dependencies: list[int]  # every stage this one needs, base included
    platform: Platform | None  # the expanded --platform, if given
    global_args: Mapping[str, str]  # visible to the stage once it re-declares them with ARG
    images: list[str] = msgspec.field(default_factory=list)  # COPY --from / --mount from= images


class BuildPlan(msgspec.Struct):
    target: int
    stages: list[PlannedStage]  # what the target needs, dependencies first
    global_args: dict[str, str]
    build_args: dict[str, str]
    images: list[str]  # image references used by COPY --from / RUN --mount=from
    warnings: list[LintWarning] = msgspec.field(default_factory=list)
    # TARGETPLATFORM and BUILDPLATFORM; implicit: no --platform was given (the target
    # is then the host's, and the image config keeps its base image's platform).
    target_platform: Platform = msgspec.field(default_factory=Platform)
    build_platform: Platform = msgspec.field(default_factory=Platform)
    implicit_platform: bool = False

    def resolve_args(
        self, cmd: ArgCommand, expand_word: Callable[[str], str]
    ) -> list[tuple[str, str | None]]:
        """Values of a stage ARG: --build-arg, else the expanded default, else the
        global value; None when unset.  The one place a stage ARG is resolved: a
        default is expanded once, and only when used."""
        out: list[tuple[str, str | None]] = []
        for key, default in cmd.args:
            if key in self.build_args:
                value: str | None = self.build_args[key]
            elif default is not None:
                value = expand_word(default)
            else:
                value = self.global_args.get(key)
            out.append((key, value))
        return out


def _platform_args(build: Platform, target: Platform, stage: str) -> dict[str, str]:
    return {
        "BUILDPLATFORM": str(build),
        "BUILDOS": build.os,
        "BUILDOSVERSION": "",
        "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant,
        "TARGETPLATFORM": str(target),
        "TARGETOS": target.os,
        "TARGETOSVERSION": "",
        "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant,
        "TARGETSTAGE": stage or "default",
    }


_HOST = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REF_RE = re.compile(
    rf"(?:(?P<domain>{_HOST}(?:\.{_HOST})*(?::[0-9]+)?|\[[0-9a-fA-F:.]+\](?::[0-9]+)?)/)?"
    rf"(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?",
    re.ASCII,
)


def valid_reference(ref: str) -> bool:
    """Roughly distribution/reference's ParseNormalizedNamed: a lower-case path,
    optional registry, tag and digest."""
    m = _REF_RE.fullmatch(ref)
    return m is not None and len(m.group("path")) + len(m.group("domain") or "") < 256


class _Planner:
    def __init__(self, df: Dockerfile, build_args: Mapping[str, str], env: dict[str, str]):
        from builder.dockerfile.expand import ShellLex  # the lexer is only needed here

        self.df = df
        self.lex = ShellLex(df.escape)
        self.build_args = dict(build_args)
        self.env = env
        self.declared: set[str] = set(env)
        self.by_name: dict[str, int] = {}

    def expand(self, word: str, env: Mapping[str, str], line: int) -> ExpandResult:
        from builder.dockerfile.expand import ExpansionError

        try:
            return self.lex.process_word_with_matches(word, env)
        except ExpansionError as err:
            raise DockerfileError(str(err), self.df.path, line) from None

    def meta_args(self) -> None:
        for cmd in self.df.meta_args:
            for key, default in cmd.args:
                self.declared.add(key)
                if key in self.build_args:
                    self.env[key] = self.build_args[key]
                elif default is not None:
                    self.env[key] = self.expand(default, self.env, cmd.line).result

    def from_word(self, st: Stage, word: str, what: str) -> str:
        res = self.expand(word, self.env, st.line)
        for name in sorted(res.unmatched):
            if name not in self.declared:
                msg = with_suggestion(
                    f"{what} {word!r} uses ${name}, but no ARG {name} is declared before "
                    "the first FROM",
                    name,
                    self.declared,
                )
                raise DockerfileError(msg, self.df.path, st.line)
        return res.result

    def source(self, ps: PlannedStage, ref: str, line: int, kind: str) -> int | None:
        """The stage index ``ref`` names, or None for an image (added to ``ps.images``)."""
        from builder.dockerfile.expand import ExpansionError

        st = ps.stage
        try:
            same = self.lex.process_word(ref, {}) == ref
        except ExpansionError:
            same = False
        if not same:
            raise DockerfileError(
                "variable expansion is not supported for --from, define a new stage with FROM "
                "using ARG from global scope as a workaround",
                self.df.path,
                line,
            )
        if kind == "COPY --from" and re.fullmatch(r"[+-]?[0-9]+", ref):
            idx = int(ref)
            if not 0 <= idx < len(self.df.stages):
                raise DockerfileError(f"invalid stage index {idx}", self.df.path, line)
        elif ref.lower() in self.by_name:
            idx = self.by_name[ref.lower()]
        else:
            # Not a stage: an image reference, as BuildKit reads it (busybox ->
            # busybox:latest).  The engine says so clearly if no such image exists.
            if not valid_reference(ref):
                msg = with_suggestion(f"{kind}={ref}: invalid reference format", ref,
                                      self.by_name)
                raise DockerfileError(msg, self.df.path, line)
            ps.images.append(ref)
            return None
        if idx >= st.index:
            raise DockerfileError(
                f'cannot use stage "{self.df.stages[idx].display_name}" from stage '
                f'"{st.display_name}": it needs to be defined before the current stage',
                self.df.path,
                line,
            )
        return idx

    def stage(self, st: Stage, replaced: Collection[str]) -> PlannedStage:
        """``st`` with its FROM resolved: base name, base stage, platform."""
        base = self.from_word(st, st.base, "FROM")
        if not base:
            raise DockerfileError(f"base name ({st.base}) should not be blank", self.df.path,
                                  st.line)
        plat = None
        if st.platform:
            text = self.from_word(st, st.platform, "FROM --platform")
            if not text:
                raise DockerfileError(
                    f"empty platform value from expression {st.platform}", self.df.path, st.line
                )
            try:
                plat = Platform.parse(text)
            except ValueError as err:
                msg = f"failed to parse platform {st.platform}: {err}"
                raise DockerfileError(msg, self.df.path, st.line) from None
        base_stage = self.by_name.get(base)
        if base_stage is None and base != "scratch" and not valid_reference(base):
            raise DockerfileError(
                f"failed to parse stage name {base!r}: invalid reference format", self.df.path,
                st.line,
            )
        if st.name:
            self.by_name[st.name] = st.index
        if st.name in replaced:  # a --build-context stands in for it: no base needed
            base_stage = None
        deps = [] if base_stage is None else [base_stage]
        return PlannedStage(st, base, base_stage, deps, plat, self.env)

    def command_sources(self, ps: PlannedStage, cmds: list[Command]) -> set[int]:
        found: list[int | None] = []
        for cmd in cmds:
            if isinstance(cmd, CopyCommand) and cmd.from_:
                found.append(self.source(ps, cmd.from_, cmd.line, "COPY --from"))
            elif isinstance(cmd, RunCommand):
                found.extend(
                    self.source(ps, m.from_, cmd.line, "RUN --mount from")
                    for m in cmd.mounts
                    if m.from_
                )
        return {i for i in found if i is not None}


def _onbuild_triggers(df: Dockerfile, base: Stage) -> list[Command]:
    from builder.dockerfile.commands import OnbuildCommand

    out = []
    for cmd in base.commands:
        if isinstance(cmd, OnbuildCommand):
            result = parse(cmd.expression, df.path)
            node = result.nodes[0]
            node.start_line = node.end_line = cmd.line
            out.append(parse_instruction(node, df.path))
    return out


def _standard_frontend(ref: str) -> bool:
    """``docker/dockerfile[-upstream][:tag][@digest]``, with or without docker.io."""
    name = ref.split("@", 1)[0]
    name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    name = name.removeprefix("docker.io/")
    return name in ("docker/dockerfile", "docker/dockerfile-upstream")


def plan_build(
    df: Dockerfile,
    *,
    target: str | None = None,
    build_args: Mapping[str, str] | None = None,
    platform: Platform | None = None,
    build_platform: Platform | None = None,
    replaced: Collection[str] = frozenset(),
) -> BuildPlan:
    """Resolve args and bases, and pick the stages ``target`` (default: last) needs.

    Raises DockerfileError for an unknown target, an undeclared or blank FROM,
    a bad ``--platform``, and a ``--from``/``from=`` that names no earlier stage.
    ``platform`` None: no --platform was given; the target is the build platform.
    ``replaced``: stage names a ``--build-context`` replaces; such a stage needs
    neither its base nor its sources (BuildKit's dockerfile2llb).
    """
    build_args = dict(build_args or {})
    build_platform = build_platform or Platform.host()
    implicit = platform is None
    platform = platform or build_platform
    chosen = _target_stage(df, target)
    env = _platform_args(build_platform, platform, target or df.stages[-1].name or "")
    env.update((k, v) for k, v in build_args.items() if k in env)
    planner = _Planner(df, build_args, env)
    planner.meta_args()
    # Bases first, all stages in order (a FROM may name any earlier stage), then the
    # sources, which may name any stage before their own.
    planned = [planner.stage(st, replaced) for st in df.stages]
    for ps in planned:
        if ps.stage.name not in replaced:
            cmds = list(ps.stage.commands)
            if ps.base_stage is not None:
                cmds += _onbuild_triggers(df, df.stages[ps.base_stage])
            ps.dependencies = sorted(set(ps.dependencies) | planner.command_sources(ps, cmds))
    needed = _needed(planned, chosen.index)
    return BuildPlan(
        target=chosen.index,
        stages=[planned[i] for i in sorted(needed)],
        global_args=dict(planner.env),
        build_args=build_args,
        images=[ref for i in sorted(needed) for ref in planned[i].images],
        warnings=_plan_warnings(df, planner.declared, build_args),
        target_platform=platform,
        build_platform=build_platform,
        implicit_platform=implicit,
    )


def _target_stage(df: Dockerfile, target: str | None) -> Stage:
    """The stage ``--target`` names, or the last one."""
    if not target:
        return df.stages[-1]
    chosen = df.stage(target)
    if chosen is None:
        names = [s.name for s in df.stages if s.name]
        msg = f"target stage {target!r} could not be found"
        raise DockerfileError(with_suggestion(msg, target, names), df.path)
    return chosen


def _needed(planned: list[PlannedStage], target: int) -> set[int]:
    """The indexes of ``target`` and every stage it depends on, directly or not."""
    needed: set[int] = set()
    todo = [target]
    while todo:
        i = todo.pop()
        if i not in needed:
            needed.add(i)
            todo.extend(planned[i].dependencies)
    return needed


def _plan_warnings(df: Dockerfile, meta_declared: set[str],
                   build_args: Mapping[str, str]) -> list[LintWarning]:
    """Build args no ARG declares, and a syntax reference that is not followed."""
    declared = meta_declared | {
        k for st in df.stages for c in st.commands if isinstance(c, ArgCommand) for k, _ in c.args
    }
    warnings = [
        LintWarning(
            "UnusedBuildArg",
            0,
            with_suggestion(
                f"build-arg {name} was not consumed: no ARG declares it", name, declared
            ),
        )
        for name in sorted(build_args)
        if name not in declared and name not in BUILTIN_ARGS and not name.startswith("BUILDKIT_")
    ]
    # pybuild has no pluggable frontends (catalogue D14): a syntax reference, from
    # the directive or BUILDKIT_SYNTAX, is never fetched or run.  Say so when it
    # names anything but the standard Dockerfile frontend, which is built in.
    frontend = (build_args.get("BUILDKIT_SYNTAX") or df.directives.get("syntax", "")).split()
    if frontend and not _standard_frontend(frontend[0]):
        warnings.append(LintWarning(
            "FrontendIgnored", 0,
            f"syntax {frontend[0]!r} is ignored: pybuild parses Dockerfiles itself and "
            "never fetches or runs a frontend image"))
    return warnings

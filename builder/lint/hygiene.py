"""Layer-hygiene rules BuildKit does not have, read from the shell of RUN steps.

Each rule looks at what a RUN step runs (``builder.lint.argv``, over the Lark
grammar of ``builder.lint.shell``) and at the stage around it (its ENV, WORKDIR
and earlier COPY/ADD steps).  The rules, their ids and their fixes are listed in
docs/lint.md; ``builder.lint.rules`` puts them in one table with BuildKit's.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from builder.dockerfile.commands import (
    AddCommand,
    CopyCommand,
    EnvCommand,
    RunCommand,
    ShellCommand,
    WorkdirCommand,
)
from builder.dockerfile.stages import Dockerfile
from builder.lint.argv import SHELLS, Invocation, invocation, invocations, run_scripts
from builder.lint.copymodes import CopyTarget, chmod_findings, copy_target
from builder.lint.shell import Script, SimpleCommand

__all__ = ["HygieneFinding", "StageFacts", "hygiene_findings"]

_APT = frozenset({"apt-get", "apt"})
_APT_VALUED = frozenset({"-o", "-c", "-t", "--option", "--config-file", "--target-release",
                         "--default-release"})
# What uses the package lists apt-get update fetched, in the same RUN.
_APT_USES_LISTS = frozenset({"install", "upgrade", "dist-upgrade", "full-upgrade",
                             "build-dep", "reinstall", "source", "download"})
_APT_LISTS = "/var/lib/apt/lists"
_FETCHERS = frozenset({"curl", "wget"})


class HygieneFinding(msgspec.Struct, frozen=True):
    rule: str
    line: int
    message: str


class StageFacts(msgspec.Struct):
    """What the walk knows of a stage before each step: inherited by a stage built on it."""

    env: set[str] = msgspec.field(default_factory=set)
    workdir: str = ""
    copies: list[CopyTarget] = msgspec.field(default_factory=list)
    posix_shell: bool = True   # False after SHELL ["pwsh", …]: shell-form RUNs not read

    def child(self) -> StageFacts:
        return StageFacts(set(self.env), self.workdir, list(self.copies), self.posix_shell)


# The shell text one lint reads at most (a hostile Dockerfile of many long RUN lines
# must not make ``pybuild check`` or a build's lint take minutes); RUN steps past it
# are not judged.
SCRIPT_BUDGET = 128 * 1024


def hygiene_findings(df: Dockerfile) -> list[HygieneFinding]:
    """Every hygiene finding of the file, stage by stage, before skip directives."""
    out: list[HygieneFinding] = []
    named: dict[str, StageFacts] = {}
    budget = SCRIPT_BUDGET
    for stage in df.stages:
        parent = named.get(stage.base.lower())
        facts = parent.child() if parent is not None else StageFacts()
        for cmd in stage.commands:
            if isinstance(cmd, EnvCommand):
                facts.env.update(key for key, _ in cmd.pairs)
            elif isinstance(cmd, WorkdirCommand):
                facts.workdir = _join(facts.workdir, cmd.path)
            elif isinstance(cmd, CopyCommand | AddCommand):
                target = copy_target(cmd, facts.workdir)
                if target is not None:
                    facts.copies.append(target)
            elif isinstance(cmd, ShellCommand):
                facts.posix_shell = bool(cmd.shell) and (
                    cmd.shell[0].rsplit("/", 1)[-1] in SHELLS)
            elif isinstance(cmd, RunCommand) and (facts.posix_shell or not cmd.shell_form):
                budget -= sum(map(len, cmd.cmd)) + sum(len(d.content) for d in cmd.heredocs)
                if budget >= 0:
                    out.extend(_run_findings(cmd, facts))
        if stage.name:
            named[stage.name.lower()] = facts
    return out


def _join(workdir: str, path: str) -> str:
    if "$" in path:
        return ""   # unknown: relative paths after it are not resolved
    if path.startswith("/"):
        return path.rstrip("/") or "/"
    return (workdir.rstrip("/") + "/" + path).rstrip("/") if workdir else ""


def _run_findings(cmd: RunCommand, facts: StageFacts) -> Iterator[HygieneFinding]:
    scripts = run_scripts(cmd)
    if scripts is None:
        return
    calls = [call for script in scripts for call in invocations(script)]
    found = [*_apt(cmd, calls), *_pip(cmd, calls, facts), *_cd(scripts[0]),
             *_piped_to_shell(scripts), *chmod_findings(calls, facts.copies, facts.workdir)]
    for rule, message in found:
        yield HygieneFinding(rule, cmd.line, message)


def _cache_mounted(cmd: RunCommand, *targets: str) -> bool:
    return any(m.type in ("cache", "tmpfs") and m.target.rstrip("/") in targets
               for m in cmd.mounts)


def _apt_subcommand(call: Invocation) -> str:
    if call.name not in _APT:
        return ""
    operands = call.operands(_APT_VALUED)
    return operands[0] if operands else ""


def _apt(cmd: RunCommand, calls: list[Invocation]) -> Iterator[tuple[str, str]]:
    subs = [(call, _apt_subcommand(call)) for call in calls]
    updates = [call for call, sub in subs if sub == "update"]
    uses = [call for call, sub in subs if sub in _APT_USES_LISTS]
    if updates and not uses:
        yield ("AptUpdateWithoutInstall",
               f"'{updates[0].name} update' without an install in the same RUN: its package "
               "lists are cached with this layer and go stale for every later install; run "
               f"'{updates[0].name} update && {updates[0].name} install -y …' in one RUN")
    for call, sub in subs:
        if sub == "install" and not any(w == "--no-install-recommends" or
                                        "Install-Recommends" in w for w in call.argv):
            yield ("AptInstallRecommends",
                   f"'{call.name} install' without --no-install-recommends also installs "
                   "the packages they recommend, into this layer; add "
                   "--no-install-recommends")
    cleaned = any(
        (call.name in ("rm", "find") and any(w.startswith(_APT_LISTS) for w in call.argv))
        or _apt_subcommand(call) in ("distclean", "dist-clean") for call in calls)
    if updates and uses and not cleaned and not _cache_mounted(
            cmd, _APT_LISTS, "/var/lib/apt"):
        yield ("AptListsNotCleaned",
               f"'{updates[0].name} update' leaves the package lists ({_APT_LISTS}, tens of "
               "MB) in this layer; end the RUN with 'rm -rf /var/lib/apt/lists/*', or mount "
               "a cache there (RUN --mount=type=cache,target=/var/lib/apt/lists …)")


def _is_pip_install(call: Invocation) -> bool:
    name = call.name
    if name == "pip" or (name.startswith("pip") and name[3:].replace(".", "").isdigit()):
        start = 1
    elif name.startswith("python") and call.argv[1:3] == ("-m", "pip"):
        start = 3
    elif name.startswith("python") and call.argv[1:2] == ("-mpip",):
        start = 2
    else:
        return False
    operands = call.operands(frozenset({"--python", "--log", "--cache-dir"}), start)
    return bool(operands) and operands[0] == "install"


def _pip(cmd: RunCommand, calls: list[Invocation],
         facts: StageFacts) -> Iterator[tuple[str, str]]:
    exported = "PIP_NO_CACHE_DIR" in facts.env or any(
        "PIP_NO_CACHE_DIR" in call.assigned or
        (call.name == "export" and any(w.startswith("PIP_NO_CACHE_DIR=") for w in call.argv))
        for call in calls)
    mounted = any(m.type in ("cache", "tmpfs") and m.target.rstrip("/").endswith(
        ("/.cache", "/.cache/pip")) for m in cmd.mounts)
    if exported or mounted:
        return
    for call in calls:
        if _is_pip_install(call) and not any(w.startswith("--no-cache-dir") for w in call.argv):
            yield ("PipNoCacheDir",
                   "'pip install' keeps its download cache (~/.cache/pip) in this layer; add "
                   "--no-cache-dir, or mount a cache (RUN --mount=type=cache,"
                   "target=/root/.cache/pip pip install …)")
            return


def _cd(script: Script) -> Iterator[tuple[str, str]]:
    """The RUN starts with ``cd DIR`` and goes on with ``&&``/``;`` (or is nothing else)."""
    if not script.items or not script.items[0].pipelines:
        return
    first = script.items[0]
    pipeline = first.pipelines[0]
    commands = pipeline.commands
    if len(commands) != 1 or pipeline.negated or not isinstance(commands[0], SimpleCommand):
        return
    call = invocation(commands[0])
    if call.argv[:1] != ("cd",) or len(call.argv) != 2 or call.argv[1].startswith("-"):
        return
    directory = call.argv[1]
    alone = len(script.items) == 1 and len(first.pipelines) == 1
    if alone:
        yield ("CdInsteadOfWorkdir",
               f"'RUN cd {directory}' does nothing: the directory change ends with the step; "
               f"use 'WORKDIR {directory}'")
    elif (first.operators[:1] == ("&&",)) or (len(first.pipelines) == 1):
        yield ("CdInsteadOfWorkdir",
               f"'RUN cd {directory} && …': use 'WORKDIR {directory}' before this RUN "
               "(it makes the directory, and later steps start there too)")


def _piped_to_shell(scripts: list[Script]) -> Iterator[tuple[str, str]]:
    for script in scripts:
        for pipeline in script.pipelines():
            names = [invocation(c).name if isinstance(c, SimpleCommand) else ""
                     for c in pipeline.commands]
            fetched = next((i for i, n in enumerate(names) if n in _FETCHERS), None)
            if fetched is not None and any(n in SHELLS for n in names[fetched + 1:]):
                yield _shell_message(names[fetched])
                return
        for call in invocations(script):
            if call.name in SHELLS and _substitutes_fetch(call):
                yield _shell_message(next(n for n in _FETCHERS if any(n in w for w in
                                                                        call.raw.words)))
                return


def _substitutes_fetch(call: Invocation) -> bool:
    """``sh -c "$(curl …)"`` or ``bash <(wget -O- …)``."""
    from builder.lint.shell import parse_script, substitutions

    for word in call.raw.words[1:]:
        for body in substitutions(word):
            inner = parse_script(body)
            if inner is not None and any(c.name in _FETCHERS for c in invocations(inner)):
                return True
    return False


def _shell_message(fetcher: str) -> tuple[str, str]:
    return ("CurlPipeShell",
            f"'{fetcher} … | sh' runs whatever the server sends, unverified; download the "
            "script to a file and check its checksum first (or ADD --checksum=sha256:… URL), "
            "then run it")


"""Typed instructions: one dataclass per Dockerfile command (BuildKit's commands.go).

Nothing is expanded at parse time. Each command's ``expand`` returns a copy
with exactly the words BuildKit expands for that instruction, using the stage
environment the build engine supplies; ``expanded_fields`` names those
fields. RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK/ONBUILD/MAINTAINER expand nothing
(the shell does it at run time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import msgspec

from builder.dockerfile.flags import InstructionError
from builder.dockerfile.heredoc import Heredoc
from builder.dockerfile.mounts import Device, Mount, parse_mount
from builder.errors import DockerfileError

__all__ = [
    "AddCommand",
    "ArgCommand",
    "CmdCommand",
    "Command",
    "CopyCommand",
    "EntrypointCommand",
    "EnvCommand",
    "ExpandWord",
    "ExpandWords",
    "ExposeCommand",
    "FromCommand",
    "HealthcheckCommand",
    "LabelCommand",
    "MaintainerCommand",
    "OnbuildCommand",
    "RunCommand",
    "ShellCommand",
    "StopsignalCommand",
    "UserCommand",
    "VolumeCommand",
    "WorkdirCommand",
]

ExpandWord = Callable[[str], str]
ExpandWords = Callable[[str], list[str]]



class Command(msgspec.Struct):
    """Fields every instruction has. ``line``/``end_line`` are 1-based physical lines;
    ``original`` is the instruction as BuildKit keeps it for history (continuations
    joined, heredoc bodies left out); ``name`` is the keyword as written."""

    keyword: ClassVar[str] = ""
    expanded_fields: ClassVar[tuple[str, ...]] = ()

    line: int = 0
    end_line: int = 0
    original: str = ""
    name: str = ""
    comments: list[str] = msgspec.field(default_factory=list)

    def expand(
        self,
        expand_word: ExpandWord,
        expand_words: ExpandWords,
        expand_raw: ExpandWord | None = None,
    ) -> Command:
        """A copy with ``expanded_fields`` expanded. ``expand_raw`` (quotes kept)
        is used for heredoc bodies of COPY/ADD; without it they stay as written."""
        return msgspec.structs.replace(self)


class FromCommand(Command):
    keyword: ClassVar[str] = "from"
    base: str = ""
    stage_name: str | None = None  # lower case
    platform: str | None = None
    as_word: str = ""  # the AS keyword as written, for the FromAsCasing rule
    args: list[str] = msgspec.field(default_factory=list)


class EnvCommand(Command):
    keyword: ClassVar[str] = "env"
    expanded_fields: ClassVar[tuple[str, ...]] = ("pairs",)
    pairs: list[tuple[str, str]] = msgspec.field(default_factory=list)
    legacy_format: bool = False  # "ENV k v" (no "=")

    def expand(self, expand_word: ExpandWord, expand_words: ExpandWords,
               expand_raw: ExpandWord | None = None) -> Command:
        pairs = [(expand_word(k), expand_word(v)) for k, v in self.pairs]
        return msgspec.structs.replace(self, pairs=pairs)


class LabelCommand(Command):
    keyword: ClassVar[str] = "label"
    expanded_fields: ClassVar[tuple[str, ...]] = ("pairs",)
    pairs: list[tuple[str, str]] = msgspec.field(default_factory=list)
    legacy_format: bool = False

    def expand(self, expand_word: ExpandWord, expand_words: ExpandWords,
               expand_raw: ExpandWord | None = None) -> Command:
        pairs = [(expand_word(k), expand_word(v)) for k, v in self.pairs]
        return msgspec.structs.replace(self, pairs=pairs)


class ArgCommand(Command):
    """``args``: (name, default or None).  ``expand`` leaves defaults as written: a
    default is expanded exactly once, when it is used (no ``--build-arg`` overrides
    it), by ``builder.engine.dispatch`` (stage ARGs) or the stage planner (ARGs before
    the first FROM), as current BuildKit does (dockerfile2llb/convert.go)."""

    keyword: ClassVar[str] = "arg"
    expanded_fields: ClassVar[tuple[str, ...]] = ("args",)
    args: list[tuple[str, str | None]] = msgspec.field(default_factory=list)
    doc_comments: list[str] = msgspec.field(default_factory=list)

    def expand(self, expand_word: ExpandWord, expand_words: ExpandWords,
               expand_raw: ExpandWord | None = None) -> Command:
        return self


def _expand_heredocs(docs: list[Heredoc], expand_raw: ExpandWord | None) -> list[Heredoc]:
    if expand_raw is None:
        return list(docs)
    return [
        msgspec.structs.replace(d, content=expand_raw(d.content)) if d.expand else d for d in docs
    ]


class CopyCommand(Command):
    """``sources`` are paths; heredoc sources are in ``source_heredocs`` with
    their body already tab-stripped for ``<<-``. ``from_`` is never expanded
    (BuildKit rejects variables there)."""

    keyword: ClassVar[str] = "copy"
    expanded_fields: ClassVar[tuple[str, ...]] = (
        "sources", "dest", "chown", "chmod", "source_heredocs",
    )  # fmt: skip
    sources: list[str] = msgspec.field(default_factory=list)
    dest: str = ""
    source_heredocs: list[Heredoc] = msgspec.field(default_factory=list)
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    exclude: list[str] = msgspec.field(default_factory=list)
    parents: bool = False

    def expand(self, expand_word: ExpandWord, expand_words: ExpandWords,
               expand_raw: ExpandWord | None = None) -> Command:
        return msgspec.structs.replace(
            self,
            sources=[expand_word(s) for s in self.sources],
            dest=expand_word(self.dest),
            chown=None if self.chown is None else expand_word(self.chown),
            chmod=None if self.chmod is None else expand_word(self.chmod),
            source_heredocs=_expand_heredocs(self.source_heredocs, expand_raw),
        )


class AddCommand(Command):
    keyword: ClassVar[str] = "add"
    expanded_fields: ClassVar[tuple[str, ...]] = (
        "sources", "dest", "chown", "chmod", "checksum", "source_heredocs",
    )  # fmt: skip
    sources: list[str] = msgspec.field(default_factory=list)
    dest: str = ""
    source_heredocs: list[Heredoc] = msgspec.field(default_factory=list)
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    exclude: list[str] = msgspec.field(default_factory=list)
    keep_git_dir: bool | None = None
    checksum: str | None = None
    unpack: bool | None = None

    def expand(self, expand_word: ExpandWord, expand_words: ExpandWords,
               expand_raw: ExpandWord | None = None) -> Command:
        return msgspec.structs.replace(
            self,
            sources=[expand_word(s) for s in self.sources],
            dest=expand_word(self.dest),
            chown=None if self.chown is None else expand_word(self.chown),
            chmod=None if self.chmod is None else expand_word(self.chmod),
            checksum=None if self.checksum is None else expand_word(self.checksum),
            source_heredocs=_expand_heredocs(self.source_heredocs, expand_raw),
        )


class RunCommand(Command):
    """``cmd``: exec-form argv, or (``shell_form``) one string for the SHELL.
    Heredoc bodies are raw (tabs kept even for ``<<-``; ``chomp`` says so)."""

    keyword: ClassVar[str] = "run"
    expanded_fields: ClassVar[tuple[str, ...]] = ("mounts",)
    cmd: list[str] = msgspec.field(default_factory=list)
    shell_form: bool = True
    heredocs: list[Heredoc] = msgspec.field(default_factory=list)
    mounts: list[Mount] = msgspec.field(default_factory=list)
    network: str | None = None
    security: str | None = None
    devices: list[Device] = msgspec.field(default_factory=list)
    flags_used: list[str] = msgspec.field(default_factory=list)

    def expand(self, expand_word: ExpandWord, expand_words: ExpandWords,
               expand_raw: ExpandWord | None = None) -> Command:
        # A command does not know its file: the engine re-raises with its path.
        try:
            mounts = [parse_mount(m.raw, expand_word) for m in self.mounts]
        except InstructionError as err:
            raise DockerfileError(str(err), "Dockerfile", self.line) from None
        return msgspec.structs.replace(self, mounts=mounts)


class CmdCommand(Command):
    keyword: ClassVar[str] = "cmd"
    cmd: list[str] = msgspec.field(default_factory=list)
    shell_form: bool = True


class EntrypointCommand(Command):
    keyword: ClassVar[str] = "entrypoint"
    cmd: list[str] = msgspec.field(default_factory=list)
    shell_form: bool = True


class ShellCommand(Command):
    keyword: ClassVar[str] = "shell"
    shell: list[str] = msgspec.field(default_factory=list)


class ExposeCommand(Command):
    keyword: ClassVar[str] = "expose"
    expanded_fields: ClassVar[tuple[str, ...]] = ("ports",)
    ports: list[str] = msgspec.field(default_factory=list)  # sorted, as upstream

    def expand(self, expand_word: ExpandWord, expand_words: ExpandWords,
               expand_raw: ExpandWord | None = None) -> Command:
        return msgspec.structs.replace(self, ports=[w for p in self.ports for w in expand_words(p)])


class VolumeCommand(Command):
    keyword: ClassVar[str] = "volume"
    expanded_fields: ClassVar[tuple[str, ...]] = ("paths",)
    paths: list[str] = msgspec.field(default_factory=list)

    def expand(self, expand_word: ExpandWord, expand_words: ExpandWords,
               expand_raw: ExpandWord | None = None) -> Command:
        return msgspec.structs.replace(self, paths=[expand_word(p) for p in self.paths])


class UserCommand(Command):
    keyword: ClassVar[str] = "user"
    expanded_fields: ClassVar[tuple[str, ...]] = ("user",)
    user: str = ""
    def expand(self, expand_word: ExpandWord, expand_words: ExpandWords,
               expand_raw: ExpandWord | None = None) -> Command:
        return msgspec.structs.replace(self, user=expand_word(self.user))


class WorkdirCommand(Command):
    keyword: ClassVar[str] = "workdir"
    expanded_fields: ClassVar[tuple[str, ...]] = ("path",)
    path: str = ""
    def expand(self, expand_word: ExpandWord, expand_words: ExpandWords,
               expand_raw: ExpandWord | None = None) -> Command:
        return msgspec.structs.replace(self, path=expand_word(self.path))


class StopsignalCommand(Command):
    keyword: ClassVar[str] = "stopsignal"
    expanded_fields: ClassVar[tuple[str, ...]] = ("signal",)
    signal: str = ""
    def expand(self, expand_word: ExpandWord, expand_words: ExpandWords,
               expand_raw: ExpandWord | None = None) -> Command:
        return msgspec.structs.replace(self, signal=expand_word(self.signal))


class HealthcheckCommand(Command):
    """``test`` is the OCI Healthcheck.Test (``["NONE"]``, ``["CMD", ...]`` or
    ``["CMD-SHELL", cmd]``); durations are nanoseconds, 0 meaning unset."""

    keyword: ClassVar[str] = "healthcheck"
    test: list[str] | None = None
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


class OnbuildCommand(Command):
    keyword: ClassVar[str] = "onbuild"
    expression: str = ""


class MaintainerCommand(Command):
    keyword: ClassVar[str] = "maintainer"
    maintainer: str = ""

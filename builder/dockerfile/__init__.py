"""Dockerfile front end: text to typed stages.

Imports only builder.errors and its own modules; no dependency on the rest of
the build.

    parser        text → instruction nodes (line joining, directives, heredocs)
    line_parsers  per-instruction argument rules (JSON/shell form, ENV words...)
    instructions  nodes → typed commands (commands.py), flags (flags.py), mounts
    stages        commands → stages; plan_build picks what a target needs
    linter        BuildKit's lint rules (lint())
    renderer      parsed Dockerfile → canonical text (render())
    expand        variable expansion (BuildKit's shell lexer), used at build time
"""

from __future__ import annotations

import importlib
import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms)

# Submodules load on first use (PEP 562), so importing the package costs nothing
# for a command that never reads a Dockerfile; the CLI must start fast.
_EXPORTS = {
    **dict.fromkeys(
        (
            "AddCommand", "ArgCommand", "CmdCommand", "Command", "CopyCommand",
            "EntrypointCommand", "EnvCommand", "ExposeCommand", "FromCommand",
            "HealthcheckCommand", "LabelCommand", "MaintainerCommand", "OnbuildCommand",
            "RunCommand", "ShellCommand", "StopsignalCommand", "UserCommand", "VolumeCommand",
            "WorkdirCommand",
        ),
        "commands",
    ),
    "Heredoc": "heredoc",
    "RULES": "linter",
    "Rule": "linter",
    "check_config": "linter",
    "lint": "linter",
    "Device": "mounts",
    "Mount": "mounts",
    "MAX_DOCKERFILE_BYTES": "parser",
    "MAX_INSTRUCTIONS": "parser",
    "MAX_LINE_BYTES": "parser",
    "LintWarning": "parser",
    "render": "renderer",
    **dict.fromkeys(
        (
            "BuildPlan", "Dockerfile", "Platform", "PlannedStage", "Stage", "parse_file",
            "parse_text", "plan_build",
        ),
        "stages",
    ),
}  # fmt: skip

if TYPE_CHECKING:
    from builder.dockerfile.commands import (
        AddCommand,
        ArgCommand,
        CmdCommand,
        Command,
        CopyCommand,
        EntrypointCommand,
        EnvCommand,
        ExposeCommand,
        FromCommand,
        HealthcheckCommand,
        LabelCommand,
        MaintainerCommand,
        OnbuildCommand,
        RunCommand,
        ShellCommand,
        StopsignalCommand,
        UserCommand,
        VolumeCommand,
        WorkdirCommand,
    )
    from builder.dockerfile.heredoc import Heredoc
    from builder.dockerfile.linter import RULES, Rule, check_config, lint
    from builder.dockerfile.mounts import Device, Mount
    from builder.dockerfile.parser import (
        MAX_DOCKERFILE_BYTES,
        MAX_INSTRUCTIONS,
        MAX_LINE_BYTES,
        LintWarning,
    )
    from builder.dockerfile.renderer import render
    from builder.dockerfile.stages import (
        BuildPlan,
        Dockerfile,
        PlannedStage,
        Platform,
        Stage,
        parse_file,
        parse_text,
        plan_build,
    )

__all__ = [
    "MAX_DOCKERFILE_BYTES",
    "MAX_INSTRUCTIONS",
    "MAX_LINE_BYTES",
    "RULES",
    "AddCommand",
    "ArgCommand",
    "BuildPlan",
    "CmdCommand",
    "Command",
    "CopyCommand",
    "Device",
    "Dockerfile",
    "EntrypointCommand",
    "EnvCommand",
    "ExposeCommand",
    "FromCommand",
    "HealthcheckCommand",
    "Heredoc",
    "LabelCommand",
    "LintWarning",
    "MaintainerCommand",
    "Mount",
    "OnbuildCommand",
    "PlannedStage",
    "Platform",
    "Rule",
    "RunCommand",
    "ShellCommand",
    "Stage",
    "StopsignalCommand",
    "UserCommand",
    "VolumeCommand",
    "WorkdirCommand",
    "check_config",
    "debug_parse",
    "lint",
    "parse_file",
    "parse_text",
    "plan_build",
    "render",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


def debug_parse(text: str | bytes | os.PathLike[str], path: str = "Dockerfile") -> str:
    """The parse tree in BuildKit's dump format: ``Node.Dump()``, one line per
    instruction and no final newline (a parser vector's ``result`` file is this
    plus one ``"\\n"``).

    ``text`` is the Dockerfile content, or a path (``os.PathLike``) to read it from.
    Unknown instructions are kept, as ``(name "")``, like upstream's parser.
    Raises DockerfileError.
    """
    from builder.dockerfile.parser import dump, parse
    from builder.errors import DockerfileError

    if isinstance(text, os.PathLike):
        path = os.fspath(text)
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError as err:
            raise DockerfileError(f"cannot read Dockerfile: {err.strerror}", path) from None
    return dump(parse(text, path))

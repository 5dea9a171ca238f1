"""Instruction handlers: metadata instructions, WORKDIR and RUN.

Each handler changes the stage state and returns the history text BuildKit
would write (``created_by``).  COPY and ADD live in ``copy.py``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import Any

from builder.engine.state import PROXY_ARGS, StageState, go_list, go_quote
from builder.errors import BuildError

# BuildPlan.resolve_args: an ARG's (name, value) pairs, each default expanded once.
ResolveArgs = Callable[[Any, Callable[[str], str]], list[tuple[str, str | None]]]


def with_shell(state: StageState, cmd: list[str]) -> list[str]:
    return [*state.shell(), " ".join(cmd)]


_HEREDOC_WORD = re.compile(r"<<-?([\"']?)([A-Za-z0-9_.-]+)\1")


def _chomp(data: str) -> str:
    """``<<-``: strip leading tabs from every line (BuildKit's ChompHeredocContent)."""
    return "".join(line.lstrip("\t") for line in data.splitlines(keepends=True))


def run_argv(state: StageState, command: Any) -> tuple[list[str], list[tuple[str, bytes]]]:
    """The RUN's argv, and files to provide under /dev/pipes (BuildKit's dispatchRun).

    A RUN that is a lone heredoc runs its body with the shell, or, if the body starts
    with ``#!``, as a script; other heredocs are handed back to the shell verbatim.
    """
    args, pipes = list(command.cmd), []
    heredocs = getattr(command, "heredocs", None) or []
    if heredocs and command.shell_form and len(args) == 1:
        if _HEREDOC_WORD.fullmatch(args[0].strip()):
            data = heredocs[0].content
            if heredocs[0].chomp:
                data = _chomp(data)
            if data.startswith("#!"):
                pipes.append((heredocs[0].name, data.encode()))
                args = [posixpath.join("/dev/pipes/", heredocs[0].name)]
            else:
                args = [data]
        else:
            args = [args[0] + "".join(f"\n{doc.content}{doc.name}" for doc in heredocs)]
    if command.shell_form:
        args = with_shell(state, args)
    return args, pipes


def run_history(state: StageState, argv: list[str]) -> str:
    """BuildKit's runCommandString: ``RUN |N K=V ... argv`` (build args first)."""
    env = state.env()
    pairs = [f"{key}={env.get(key, value or '')}" for key, value in state.args.items()]
    prefix = [f"|{len(pairs)}", *pairs] if pairs else []
    return "RUN " + " ".join([*prefix, *argv])


def normalize_workdir(current: str, path: str) -> str:
    if not path:
        raise BuildError("WORKDIR requires a path")
    joined = path if path.startswith("/") else posixpath.join(current or "/", path)
    return posixpath.normpath("/" + joined.lstrip("/")).replace("//", "/")


def apply_metadata(state: StageState, command: Any, resolve_args: ResolveArgs,
                   expand_word: Any) -> str | None:
    """Apply a metadata-only instruction; return its history text (None: no history)."""
    config = state.config
    keyword = command.keyword
    if keyword == "env":
        for key, value in command.pairs:
            state.set_env(key, value)
        return "ENV " + " ".join(f"{k}={v}" for k, v in command.pairs)
    if keyword == "label":
        labels = dict(config.get("Labels") or {})
        for key, value in command.pairs:
            labels[key] = value
        config["Labels"] = labels
        return "LABEL " + " ".join(f"{k}={v}" for k, v in command.pairs)
    if keyword == "arg":
        return _apply_arg(state, resolve_args(command, expand_word))
    if keyword in ("cmd", "entrypoint"):
        argv = with_shell(state, command.cmd) if command.shell_form else list(command.cmd)
        if keyword == "cmd":
            config["Cmd"] = argv
            config["ArgsEscaped"] = True
            state.cmd_set = True
        else:
            config["Entrypoint"] = argv
            if not state.cmd_set:
                config.pop("Cmd", None)
        return f"{keyword.upper()} {go_list(argv, quoted=True)}"
    if keyword == "user":
        config["User"] = command.user
        return f"USER {command.user}"
    if keyword == "volume":
        volumes = dict(config.get("Volumes") or {})
        for path in command.paths:
            if not path:
                raise BuildError("VOLUME specified can not be an empty string")
            volumes[path] = {}
        config["Volumes"] = volumes
        return f"VOLUME {go_list(list(command.paths))}"
    if keyword == "expose":
        ports = [_port(p) for p in command.ports]
        exposed = dict(config.get("ExposedPorts") or {})
        for port in ports:
            exposed[port] = {}
        config["ExposedPorts"] = exposed
        return f"EXPOSE {go_list(ports)}"
    if keyword == "stopsignal":
        config["StopSignal"] = command.signal
        return f"STOPSIGNAL {command.signal}"
    if keyword == "shell":
        config["Shell"] = list(command.shell)
        return f"SHELL {go_list(list(command.shell))}"
    if keyword == "maintainer":
        state.image["author"] = command.maintainer
        return f"MAINTAINER {command.maintainer}"
    if keyword == "onbuild":
        config["OnBuild"] = [*(config.get("OnBuild") or []), command.expression]
        return None
    if keyword == "healthcheck":
        return _apply_healthcheck(state, command)
    raise BuildError(f"unsupported instruction {keyword.upper()}")


def _apply_arg(state: StageState, values: list[tuple[str, str | None]]) -> str:
    parts = []
    for key, value in values:
        state.args[key] = value
        parts.append(key if value is None else f"{key}={value}")
    # Proxy args stay out of the history, as BuildKit's nonEnvArgs do.
    shown = [p for p in parts if p.split("=", 1)[0] not in PROXY_ARGS]
    return "ARG " + " ".join(shown)


def _port(spec: str) -> str:
    """``[ip:][public:]private[/proto]`` -> ``private/proto`` (ranges kept)."""
    port, _, proto = spec.partition("/")
    port = port.rsplit(":", 1)[-1]
    proto = (proto or "tcp").lower()
    if not port or not all(part.isdigit() for part in port.split("-")):
        raise BuildError(f"invalid containerPort: {spec}")
    return f"{port}/{proto}"


_DURATION_UNITS = (("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9))


def go_duration(nanos: int) -> str:
    """Go's time.Duration.String() for whole-second-ish durations."""
    if nanos == 0:
        return "0s"
    out = []
    hours, rest = divmod(nanos, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    if hours:
        out.append(f"{hours}h")
    if hours or minutes:
        out.append(f"{minutes}m")
    seconds = rest / 10**9
    out.append(f"{seconds:g}s")
    return "".join(out)


def _apply_healthcheck(state: StageState, command: Any) -> str:
    check: dict[str, Any] = {"Test": list(command.test or [])}
    for field_name, attr in (("Interval", "interval"), ("Timeout", "timeout"),
                             ("StartPeriod", "start_period"),
                             ("StartInterval", "start_interval")):
        value = getattr(command, attr, None)
        if value:
            check[field_name] = int(value)
    if getattr(command, "retries", None):
        check["Retries"] = int(command.retries)
    state.config["Healthcheck"] = check
    shown = (f"{{Test:{go_list(check['Test'])} "
             f"Interval:{go_duration(check.get('Interval', 0))} "
             f"Timeout:{go_duration(check.get('Timeout', 0))} "
             f"StartPeriod:{go_duration(check.get('StartPeriod', 0))} "
             f"StartInterval:{go_duration(check.get('StartInterval', 0))} "
             f"Retries:{check.get('Retries', 0)}}}")
    return f"HEALTHCHECK {shown}"


__all__ = ["apply_metadata", "go_quote", "normalize_workdir", "run_argv", "run_history"]

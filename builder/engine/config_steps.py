"""Handlers of the instructions that change the image config (and WORKDIR's directory).

Each returns the history text BuildKit writes (``created_by``), or None for none;
``dispatch`` records it.  RUN is ``run_step``, COPY and ADD are ``copy_step``.
"""

from __future__ import annotations

import os
import posixpath
from typing import TYPE_CHECKING

from builder.cache.reasons import Reason, ReasonCode
from builder.dockerfile.commands import (
    ArgCommand,
    CmdCommand,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthcheckCommand,
    LabelCommand,
    MaintainerCommand,
    OnbuildCommand,
    ShellCommand,
    StopsignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
)
from builder.dockerfile.stages import PROXY_ARGS
from builder.engine.buildrun import Step
from builder.engine.state import go_list
from builder.errors import BuildError

if TYPE_CHECKING:
    from builder.snapshot import ActiveSnapshot


def with_shell(shell: list[str], cmd: list[str]) -> list[str]:
    """A shell-form command as the stage's SHELL runs it."""
    return [*shell, " ".join(cmd)]


def env(step: Step, command: EnvCommand) -> str:
    for key, value in command.pairs:
        step.state.set_env(key, value)
    return "ENV " + " ".join(f"{k}={v}" for k, v in command.pairs)


def label(step: Step, command: LabelCommand) -> str:
    config = step.state.config
    labels = dict(config.get("Labels") or {})
    for key, value in command.pairs:
        labels[key] = value
    config["Labels"] = labels
    return "LABEL " + " ".join(f"{k}={v}" for k, v in command.pairs)


def arg(step: Step, command: ArgCommand) -> str:
    parts = []
    for key, value in step.run.plan.resolve_args(command, step.expand_word):
        step.state.args[key] = value
        parts.append(key if value is None else f"{key}={value}")
    # Proxy args stay out of the history, as BuildKit's nonEnvArgs do.
    shown = [p for p in parts if p.split("=", 1)[0] not in PROXY_ARGS]
    return "ARG " + " ".join(shown)


def cmd(step: Step, command: CmdCommand) -> str:
    state = step.state
    argv = with_shell(state.shell(), command.cmd) if command.shell_form else list(command.cmd)
    state.config["Cmd"] = argv
    state.config["ArgsEscaped"] = True
    state.cmd_set = True
    return f"CMD {go_list(argv, quoted=True)}"


def entrypoint(step: Step, command: EntrypointCommand) -> str:
    state = step.state
    argv = with_shell(state.shell(), command.cmd) if command.shell_form else list(command.cmd)
    state.config["Entrypoint"] = argv
    if not state.cmd_set:  # an ENTRYPOINT resets a CMD the base image set
        state.config.pop("Cmd", None)
    return f"ENTRYPOINT {go_list(argv, quoted=True)}"


def user(step: Step, command: UserCommand) -> str:
    step.state.config["User"] = command.user
    return f"USER {command.user}"


def volume(step: Step, command: VolumeCommand) -> str:
    config = step.state.config
    volumes = dict(config.get("Volumes") or {})
    for path in command.paths:
        if not path:
            raise BuildError("VOLUME specified can not be an empty string")
        volumes[path] = {}
    config["Volumes"] = volumes
    return f"VOLUME {go_list(list(command.paths))}"


def expose(step: Step, command: ExposeCommand) -> str:
    config = step.state.config
    ports = [_port(p) for p in command.ports]
    exposed = dict(config.get("ExposedPorts") or {})
    for port in ports:
        exposed[port] = {}
    config["ExposedPorts"] = exposed
    return f"EXPOSE {go_list(ports)}"


def stopsignal(step: Step, command: StopsignalCommand) -> str:
    step.state.config["StopSignal"] = command.signal
    return f"STOPSIGNAL {command.signal}"


def shell(step: Step, command: ShellCommand) -> str:
    step.state.config["Shell"] = list(command.shell)
    return f"SHELL {go_list(list(command.shell))}"


def maintainer(step: Step, command: MaintainerCommand) -> str:
    step.state.image["author"] = command.maintainer
    return f"MAINTAINER {command.maintainer}"


def onbuild(step: Step, command: OnbuildCommand) -> None:
    config = step.state.config
    config["OnBuild"] = [*(config.get("OnBuild") or []), command.expression]
    return None  # BuildKit writes no history for ONBUILD


def _port(spec: str) -> str:
    """``[ip:][public:]private[/proto]`` -> ``private/proto`` (ranges kept)."""
    port, _, proto = spec.partition("/")
    port = port.rsplit(":", 1)[-1]
    proto = (proto or "tcp").lower()
    if not port or not all(part.isdigit() for part in port.split("-")):
        raise BuildError(f"invalid containerPort: {spec}")
    return f"{port}/{proto}"


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


def healthcheck(step: Step, command: HealthcheckCommand) -> str:
    check: dict[str, object] = {"Test": list(command.test or [])}
    durations = {"Interval": command.interval, "Timeout": command.timeout,
                 "StartPeriod": command.start_period, "StartInterval": command.start_interval}
    for field_name, value in durations.items():
        if value:
            check[field_name] = int(value)
    if command.retries:
        check["Retries"] = int(command.retries)
    step.state.config["Healthcheck"] = check
    shown_durations = " ".join(f"{name}:{go_duration(int(value or 0))}"
                               for name, value in durations.items())
    shown = (f"{{Test:{go_list(list(command.test or []))} {shown_durations} "
             f"Retries:{int(command.retries or 0)}}}")
    return f"HEALTHCHECK {shown}"


def normalize_workdir(current: str, path: str) -> str:
    if not path:
        raise BuildError("WORKDIR requires a path")
    joined = path if path.startswith("/") else posixpath.join(current or "/", path)
    return posixpath.normpath("/" + joined.lstrip("/")).replace("//", "/")


def workdir(step: Step, command: WorkdirCommand) -> str:
    """WORKDIR sets the config and makes the directory (a layer), but for "/"."""
    from builder.engine.layerstep import layer_step

    state, record = step.state, step.record
    path = normalize_workdir(state.workdir(), command.path)
    state.config["WorkingDir"] = path
    if path == "/":  # BuildKit's dispatchWorkdir makes no layer (no mkdir) for "/"
        record.reasons = [Reason(ReasonCode.CONFIG_ONLY)]
        return f"WORKDIR {path}"
    owner = state.config.get("User", "")
    inputs = [("instruction", "WORKDIR"), ("path", path), ("user", owner)]
    layer_step(step.run, state, record, inputs, lambda snap: _mkdir(snap, path, owner))
    return f"WORKDIR {path}"


def _mkdir(snap: ActiveSnapshot, path: str, owner: str) -> None:
    """Make WORKDIR's directory in the step's snapshot (on a cache miss only: the
    namespace machinery is not imported on the cached path)."""
    from builder.run import in_mount_namespace

    in_mount_namespace(_mkdir_in_snapshot, snap, path, owner, writing="the directory")


def _mkdir_in_snapshot(snapshot: ActiveSnapshot, path: str, owner: str) -> None:
    """In the step's mount namespace: mount the snapshot, make ``path`` owned by ``owner``."""
    from builder.engine.copier import make_dirs
    from builder.run.sandbox import resolve_user

    merged = str(snapshot.work.path / "merged")
    os.makedirs(merged, exist_ok=True)
    snapshot.mount(merged)
    ident = resolve_user(merged, owner) if owner else None
    make_dirs(merged, path, ident.uid if ident else 0, ident.gid if ident else 0)

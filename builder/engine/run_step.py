"""The RUN handler: the command line, its mounts, its cache inputs, the sandbox run."""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from typing import TYPE_CHECKING

from builder.dockerfile.commands import RunCommand
from builder.engine import stageplatform
from builder.engine.buildrun import BuildRun, Step
from builder.engine.config_steps import with_shell
from builder.engine.layerstep import layer_step
from builder.engine.runmounts import check_privileges, prepare_mounts
from builder.engine.sources import resolve_from
from builder.engine.state import StageState
from builder.errors import BuildError
from builder.run.runopts import run_inputs
from builder.run.spec import RunSpec

if TYPE_CHECKING:
    from builder.snapshot import ActiveSnapshot

_HEREDOC_WORD = re.compile(r"<<-?([\"']?)([A-Za-z0-9_.-]+)\1")


def run(step: Step, command: RunCommand) -> str:
    """Run the command on a snapshot of the stage (or reuse its cached layer)."""
    build, state, record = step.run, step.state, step.record
    # check_runnable saw the Dockerfile's RUNs; this catches a base image's ONBUILD RUN.
    stageplatform.ensure_runnable(state.platform, build.dockerfile_path, command.line,
                                  state.name)
    argv, pipes = run_argv(state, command)
    mounts = prepare_mounts(
        build.store, command.mounts, workdir=state.workdir(),
        context=str(build.options.context) if build.options.context else None,
        context_filter=build.ignore,
        secrets=build.options.secrets, cache=build.cache,
        resolve_from=lambda name: resolve_from(build, name, command.line),
        driver=build.options.storage_driver, plan_only=build.options.plan)
    try:
        env = state.run_env()
        spec = RunSpec(argv=argv, env=env + mounts.secret_env, cwd=state.workdir(),
                       user=state.config.get("User", ""),
                       network=check_privileges(command, build.options.network),
                       mounts=mounts.mounts, pipes=pipes, options=build.options.run_options)
        inputs = [("instruction", "RUN"), ("argv", json.dumps(argv)),
                  *(("env", entry) for entry in sorted(env)), ("workdir", spec.cwd),
                  ("user", spec.user), ("network", spec.network),
                  *(("pipe", f"{name}={hashlib.sha256(data).hexdigest()}")
                    for name, data in pipes), *mounts.inputs, *run_inputs(spec.options)]
        layer_step(build, state, record, inputs, lambda snap: _run(build, snap, spec))
    finally:
        mounts.release()
    return run_history(state, argv) + " # buildkit"


def _chomp(data: str) -> str:
    """``<<-``: strip leading tabs from every line (BuildKit's ChompHeredocContent)."""
    return "".join(line.lstrip("\t") for line in data.splitlines(keepends=True))


def run_argv(state: StageState, command: RunCommand) -> tuple[list[str], list[tuple[str, bytes]]]:
    """The RUN's argv, and files to provide under /dev/pipes (BuildKit's dispatchRun).

    A RUN that is a lone heredoc runs its body with the shell, or, if the body starts
    with ``#!``, as a script; other heredocs are handed back to the shell verbatim.
    """
    args, pipes = list(command.cmd), []
    heredocs = command.heredocs
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
        args = with_shell(state.shell(), args)
    return args, pipes


def run_history(state: StageState, argv: list[str]) -> str:
    """BuildKit's runCommandString: ``RUN |N K=V ... argv`` (build args first)."""
    env = state.env()
    pairs = [f"{key}={env.get(key, value or '')}" for key, value in state.args.items()]
    prefix = [f"|{len(pairs)}", *pairs] if pairs else []
    return "RUN " + " ".join([*prefix, *argv])


def _run(build: BuildRun, snapshot: ActiveSnapshot, spec: RunSpec) -> None:
    from builder.run import run_step  # the sandbox loads on a miss only

    code = run_step(snapshot, spec, build.progress.output)
    if code != 0:
        tail = "\n".join(build.progress.tail)
        shown = " ".join(spec.argv)
        message = f"process \"{shown}\" did not complete successfully: exit code: {code}"
        if tail:
            message += f"\n--- last lines of output ---\n{tail}"
        error = BuildError(message)
        error.process_exit = code
        raise error

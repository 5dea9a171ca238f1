"""Step dispatch: one table from instruction kind to its typed handler.

A handler takes the step (``buildrun.Step``: the build, the stage state, the
step's record) and its command, already expanded, and returns the history
text BuildKit writes for it (``created_by``), or None for none.  Config-only
handlers are ``config_steps``; RUN is ``run_step``; COPY and ADD are
``copy_step``.  ``execute`` expands the command's words and calls its handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

from builder.cache.reasons import Reason, ReasonCode
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
    OnbuildCommand,
    RunCommand,
    ShellCommand,
    StopsignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
)
from builder.engine import config_steps, copy_step, run_step
from builder.engine.buildrun import BuildRun, Step
from builder.engine.history import add_history
from builder.engine.state import StageState
from builder.errors import BuildError, DockerfileError
from builder.explain.steps import StepRecord

C = TypeVar("C", bound=Command)
# A handler of one kind; the table's key guarantees the command is of that kind.
Handler = Callable[[Step, C], "str | None"]
AnyHandler = Callable[[Step, Command], "str | None"]


def _entry(kind: type[C], handler: Handler[C]) -> tuple[type[Command], AnyHandler]:
    """One row of the table; mypy checks that ``handler`` takes a ``kind``."""
    return kind, cast(AnyHandler, handler)


# Instructions that make no layer say so in explain ("config only"); the layer
# steps (RUN, COPY, ADD, WORKDIR but "/") set their own reasons from the cache.
LAYER_KINDS: frozenset[type[Command]] = frozenset(
    {RunCommand, CopyCommand, AddCommand, WorkdirCommand})

HANDLERS: dict[type[Command], AnyHandler] = dict([
    _entry(RunCommand, run_step.run),
    _entry(CopyCommand, copy_step.copy),
    _entry(AddCommand, copy_step.copy),
    _entry(WorkdirCommand, config_steps.workdir),
    _entry(EnvCommand, config_steps.env),
    _entry(LabelCommand, config_steps.label),
    _entry(ArgCommand, config_steps.arg),
    _entry(CmdCommand, config_steps.cmd),
    _entry(EntrypointCommand, config_steps.entrypoint),
    _entry(UserCommand, config_steps.user),
    _entry(VolumeCommand, config_steps.volume),
    _entry(ExposeCommand, config_steps.expose),
    _entry(StopsignalCommand, config_steps.stopsignal),
    _entry(ShellCommand, config_steps.shell),
    _entry(MaintainerCommand, config_steps.maintainer),
    _entry(OnbuildCommand, config_steps.onbuild),
    _entry(HealthcheckCommand, config_steps.healthcheck),
])


def execute(run: BuildRun, state: StageState, command: Command, record: StepRecord) -> None:
    """Expand ``command`` in the stage's environment, run its handler, record its history."""
    from builder.dockerfile.expand import ExpansionError, ShellLex

    lexer = ShellLex(run.escape)
    env = state.expansion_env()

    def expand_word(word: str) -> str:
        try:
            return lexer.process_word(word, env)
        except ExpansionError as err:
            raise DockerfileError(str(err), run.dockerfile_path, command.line) from None

    def expand_words(word: str) -> list[str]:
        try:
            return lexer.process_words(word, env)
        except ExpansionError as err:
            raise DockerfileError(str(err), run.dockerfile_path, command.line) from None

    command = command.expand(expand_word, expand_words)
    handler = HANDLERS.get(type(command))
    if handler is None:
        raise BuildError(f"unsupported instruction {command.keyword.upper()}")
    if type(command) not in LAYER_KINDS:
        record.reasons = [Reason(ReasonCode.CONFIG_ONLY)]
    history = handler(Step(run, state, record, expand_word), command)
    if history is not None:
        add_history(state, history, record)

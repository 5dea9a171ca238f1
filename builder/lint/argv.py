"""What a RUN step runs, as argument vectors the hygiene rules can read.

``run_scripts`` turns a RUN instruction into shell scripts (its shell-form line,
the heredoc bodies the shell reads as its script, or the ``sh -c`` script of an
exec form); ``Invocation`` is one simple command with the quoting removed and the
wrappers (``sudo``, ``env``, ``nice``, …) and leading reserved words (``then``,
``do``) taken off, so ``then sudo -E apt-get install x`` reads as ``apt-get install x``.
"""

from __future__ import annotations

import os

import msgspec

from builder.dockerfile.commands import RunCommand
from builder.lint.shell import Script, SimpleCommand, parse_script, skip_reserved, unquote

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh"})
# Commands that run the rest of their words as a command; the options that take a value.
_WRAPPERS = {"sudo": frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-U"}),
             "env": frozenset({"-u", "-C", "-S"}), "nice": frozenset({"-n"}),
             "nohup": frozenset(), "time": frozenset(), "command": frozenset(),
             "exec": frozenset({"-a"}), "stdbuf": frozenset({"-i", "-o", "-e"})}


class Invocation(msgspec.Struct, frozen=True):
    """One simple command: ``argv[0]`` is the program's base name; ``assigned`` the
    variables set for it (``A=1 cmd``, ``env A=1 cmd``)."""

    argv: tuple[str, ...]
    assigned: frozenset[str]
    raw: SimpleCommand

    @property
    def name(self) -> str:
        return self.argv[0] if self.argv else ""

    def operands(self, valued: frozenset[str] = frozenset(), start: int = 1) -> list[str]:
        """The words after ``start`` that are not options (nor an option's value)."""
        out, i = [], start
        while i < len(self.argv):
            word = self.argv[i]
            if word in valued:
                i += 2
                continue
            if not word.startswith("-") or word == "-":
                out.append(word)
            i += 1
        return out


def invocation(command: SimpleCommand) -> Invocation:
    words = [unquote(w) for w in skip_reserved(command.words)]
    assigned = {a.split("=", 1)[0] for a in command.assignments}
    while words:
        name = os.path.basename(words[0])
        if name == "busybox" and len(words) > 1:
            words = words[1:]
            continue
        valued = _WRAPPERS.get(name)
        if valued is None:
            break
        i = 1
        while i < len(words) and (words[i].startswith("-") or
                                  (name == "env" and "=" in words[i])):
            if name == "env" and "=" in words[i] and not words[i].startswith("-"):
                assigned.add(words[i].split("=", 1)[0])
            i += 2 if words[i] in valued else 1
        words = words[i:]
    if words:
        words[0] = os.path.basename(words[0])
    return Invocation(tuple(words), frozenset(assigned), command)


def invocations(script: Script) -> list[Invocation]:
    return [invocation(c) for c in script.simple_commands()]


def run_scripts(cmd: RunCommand) -> list[Script] | None:
    """The scripts a RUN step hands its shell; None when one does not parse (the
    rules then say nothing about the step)."""
    if not cmd.shell_form:
        argv = [str(w) for w in cmd.cmd]
        if len(argv) >= 3 and os.path.basename(argv[0]) in SHELLS and _runs_string(argv[1]):
            texts = [argv[2]]
        else:
            return [Script(()) if not argv else parse_script(" ".join(_quote(argv))) or Script(())]
    else:
        texts = [" ".join(cmd.cmd)]
    scripts = []
    for text in texts:
        script = parse_script(text)
        if script is None:
            return None
        scripts.append(script)
    if cmd.heredocs and _reads_heredoc(scripts[0]):
        for doc in cmd.heredocs:
            body = parse_script(doc.content)
            if body is None:
                return None
            scripts.append(body)
    return scripts


def _runs_string(option: str) -> bool:
    """``-c``, or bundled short options ending in it (``-ec``, ``-euxc``)."""
    return option.startswith("-") and not option.startswith("--") and option.endswith("c")


def _reads_heredoc(script: Script) -> bool:
    """``RUN <<EOF`` (the body is the script) or ``RUN bash <<EOF`` (a shell reads it)."""
    commands = script.simple_commands()
    if not commands:
        return False
    first = invocation(commands[0])
    return not first.argv or (first.name in SHELLS and "-c" not in first.argv)


def _quote(argv: list[str]) -> list[str]:
    return ["'" + w.replace("'", "'\\''") + "'" for w in argv]

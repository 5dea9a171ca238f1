"""Parser nodes → typed instructions, as BuildKit's ``instructions/parse.go``.

Argument counts, flags and their values are checked here, with upstream's
error messages; the result is one ``commands`` dataclass per instruction.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import msgspec

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
from builder.dockerfile.directives import go_lower, go_trim_space, go_upper
from builder.dockerfile.flags import (
    BFlags,
    InstructionError,
    parse_go_duration,
    parse_go_int,
    with_suggestion,
)
from builder.dockerfile.heredoc import Heredoc, chomp_heredoc_content, parse_heredoc
from builder.dockerfile.line_parsers import KNOWN_INSTRUCTIONS, go_quote
from builder.dockerfile.mounts import parse_device, parse_mount
from builder.dockerfile.parser import Node
from builder.errors import DockerfileError

__all__ = ["handle_json_args", "parse_instruction", "parse_opt_interval"]

_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")
NETWORK_MODES = ("default", "none", "host")
SECURITY_MODES = ("insecure", "sandbox")


def handle_json_args(args: list[str], is_json: bool) -> list[str]:
    """Exec form keeps the argv; shell form joins it into one string."""
    if not args:
        return []
    return list(args) if is_json else [" ".join(args)]


def _at_least_one(cmd: str) -> InstructionError:
    return InstructionError(f"{cmd} requires at least one argument")


def _exactly_one(cmd: str) -> InstructionError:
    return InstructionError(f"{cmd} requires exactly one argument")


def _kvps(args: list[str], cmd: str) -> list[tuple[str, str]]:
    if not args:
        raise _at_least_one(cmd)
    if len(args) % 3:
        raise InstructionError(f"Bad input to {cmd}, too many arguments")
    out = []
    for i in range(0, len(args), 3):
        if not args[i]:
            raise InstructionError(f"{cmd} names can not be blank")
        out.append((args[i], args[i + 1]))
    return out


def _doc_comment(comments: list[str], name: str) -> str:
    if not name:
        return ""
    for line in comments:
        if line.startswith(name + " "):
            return line[len(name) + 1 :]
    return ""


def parse_opt_interval(name: str, value: str) -> int:
    """A HEALTHCHECK duration flag → nanoseconds; 0 (or empty) means unset."""
    if not value:
        return 0
    try:
        d = parse_go_duration(value)
    except ValueError as err:
        raise InstructionError(str(err)) from None
    if d == 0:
        return 0
    if d < 1_000_000:
        raise InstructionError(f"Interval {go_quote(name)} cannot be less than 1ms")
    return d


def _sources_and_dest(
    node: Node, args: list[str], cmd: str
) -> tuple[list[str], str, list[Heredoc]]:
    srcs, dest = args[:-1], args[-1]
    if _parse_heredoc_safe(dest) is not None:
        raise InstructionError(f"{cmd} cannot accept a heredoc as a destination")
    bodies = {h.name: h.content for h in node.heredocs}
    paths: list[str] = []
    docs: list[Heredoc] = []
    for src in srcs:
        doc = _parse_heredoc_safe(src)
        if doc is None:
            paths.append(src)
            continue
        content = bodies.get(doc.name, "")
        if doc.chomp:
            content = chomp_heredoc_content(content)
        docs.append(Heredoc(doc.name, content, doc.expand, doc.chomp, doc.file_descriptor))
    return paths, dest, docs


def _parse_heredoc_safe(word: str) -> Heredoc | None:
    try:
        return parse_heredoc(word)
    except ValueError:
        return None


def _stamp(cmd: Command, node: Node) -> Command:
    """Fill in the fields every instruction has, from its parser node."""
    cmd.line = node.start_line
    cmd.end_line = node.end_line
    cmd.original = go_trim_space(node.original)
    cmd.name = node.value
    cmd.comments = list(node.comments)
    return cmd


def _parse(node: Node) -> Command:
    kw = go_lower(node.value)
    parser = _PARSERS.get(kw)
    if parser is None:
        names = sorted(k.upper() for k in KNOWN_INSTRUCTIONS)
        raise InstructionError(
            with_suggestion(f"unknown instruction: {node.value}", node.value, names, False)
        )
    return _stamp(parser(node, kw, node.all_args(), BFlags(node.flags)), node)


def _parse_from(node: Node, kw: str, args: list[str], bf: BFlags) -> Command:
    stage: str | None = None
    if len(args) == 3 and args[1].lower() == "as":
        stage = go_lower(args[2])
        if not _STAGE_NAME.fullmatch(stage):
            raise InstructionError(
                f"invalid name for build stage: {go_quote(args[2])}, "
                "name can't start with a number or contain symbols"
            )
    elif len(args) != 1:
        raise InstructionError("FROM requires either one or three arguments")
    platform = bf.add_string("platform")
    bf.parse()
    return FromCommand(
        base=args[0],
        stage_name=stage,
        platform=platform.value or None,
        as_word=args[1] if len(args) == 3 else "",
        args=args,
    )


def _parse_env_label(node: Node, kw: str, args: list[str], bf: BFlags) -> Command:
    bf.parse()
    pairs = _kvps(args, kw.upper())
    legacy = any(args[i + 2] == "" for i in range(0, len(args), 3))
    if kw == "env":
        return EnvCommand(pairs=pairs, legacy_format=legacy)
    return LabelCommand(pairs=pairs, legacy_format=legacy)


def _parse_maintainer(node: Node, kw: str, args: list[str], bf: BFlags) -> Command:
    if len(args) != 1:
        raise _exactly_one("MAINTAINER")
    bf.parse()
    return MaintainerCommand(maintainer=args[0])


def onbuild_trigger(original: str) -> str:
    """The trigger of an ``ONBUILD`` line as written (what BuildKit keeps and re-parses):
    the line without its keyword.  The pattern folds case as Go's ``(?i)`` does, which
    makes it slow to compile (~4 ms): ``re`` compiles it at the first ONBUILD, not at
    import."""
    return re.sub(r"^[\t\n\f\r ]*ONBUILD[\t\n\f\r ]*", "", original, count=1,
                  flags=re.IGNORECASE)


def _parse_onbuild(node: Node, kw: str, args: list[str], bf: BFlags) -> Command:
    if not args:
        raise _at_least_one("ONBUILD")
    bf.parse()
    trigger = go_upper(args[0].strip())
    if trigger == "ONBUILD":
        raise InstructionError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise InstructionError(f"{trigger} isn't allowed as an ONBUILD trigger")
    expr = onbuild_trigger(node.original)
    for doc in node.heredocs:
        expr += "\n" + doc.content + doc.name
    return OnbuildCommand(expression=expr)


def _parse_one_word(node: Node, kw: str, args: list[str], bf: BFlags) -> Command:
    """WORKDIR, USER and STOPSIGNAL: exactly one argument."""
    if len(args) != 1:
        raise _exactly_one(kw.upper())
    if kw == "workdir":
        bf.parse()
        return WorkdirCommand(path=args[0])
    if kw == "user":
        bf.parse()
        return UserCommand(user=args[0])
    # upstream never parses STOPSIGNAL's flags
    return StopsignalCommand(signal=args[0])


def _parse_cmd_entrypoint(node: Node, kw: str, args: list[str], bf: BFlags) -> Command:
    bf.parse()
    argv = handle_json_args(args, node.json)
    if kw == "cmd":
        return CmdCommand(cmd=argv, shell_form=not node.json)
    return EntrypointCommand(cmd=argv, shell_form=not node.json)


def _parse_expose(node: Node, kw: str, args: list[str], bf: BFlags) -> Command:
    if not args:
        raise _at_least_one("EXPOSE")
    bf.parse()
    return ExposeCommand(ports=sorted(args))


def _parse_volume(node: Node, kw: str, args: list[str], bf: BFlags) -> Command:
    if not args:
        raise _at_least_one("VOLUME")
    bf.parse()
    paths = []
    for v in args:
        v = v.strip()
        if not v:
            raise InstructionError("VOLUME specified can not be an empty string")
        paths.append(v)
    return VolumeCommand(paths=paths)


def _parse_arg(node: Node, kw: str, args: list[str], bf: BFlags) -> Command:
    if not args:
        raise _at_least_one("ARG")
    pairs: list[tuple[str, str | None]] = []
    for a in args:
        k, eq, v = a.partition("=")
        if eq and not k:
            raise InstructionError("ARG names can not be blank")
        pairs.append((k, v if eq else None))
    docs = [_doc_comment(node.comments, k) for k, _ in pairs]
    return ArgCommand(args=pairs, doc_comments=docs)


def _parse_shell(node: Node, kw: str, args: list[str], bf: BFlags) -> Command:
    bf.parse()
    shell = handle_json_args(args, node.json)
    if not shell:
        raise _at_least_one("SHELL")
    if not node.json:
        raise InstructionError("SHELL requires the arguments to be in JSON form")
    return ShellCommand(shell=shell)


def _parse_copy(node: Node, kw: str, args: list[str], bf: BFlags) -> Command:
    cmd = kw.upper()
    if len(args) < 2:
        raise InstructionError(
            f"{cmd} requires at least two arguments, but only one was provided. "
            "Destination could not be determined"
        )
    chown = bf.add_string("chown")
    if kw == "copy":
        from_ = bf.add_string("from")
    chmod = bf.add_string("chmod")
    link = bf.add_bool("link")
    if kw == "add":
        keep_git = bf.add_bool("keep-git-dir")
        checksum = bf.add_string("checksum")
        unpack = bf.add_bool("unpack")
    exclude = bf.add_strings("exclude")
    if kw == "copy":
        parents = bf.add_bool("parents")
    bf.parse()
    sources, dest, docs = _sources_and_dest(node, args, cmd)
    if kw == "copy":
        return CopyCommand(
            sources=sources,
            dest=dest,
            source_heredocs=docs,
            from_=from_.value or None,
            chown=chown.value or None,
            chmod=chmod.value or None,
            link=link.is_true,
            exclude=list(exclude.values),
            parents=parents.is_true,
        )
    return AddCommand(
        sources=sources,
        dest=dest,
        source_heredocs=docs,
        chown=chown.value or None,
        chmod=chmod.value or None,
        link=link.is_true,
        exclude=list(exclude.values),
        keep_git_dir=keep_git.is_true if keep_git.used else None,
        checksum=checksum.value or None,
        unpack=unpack.is_true if unpack.used else None,
    )


def _parse_run(node: Node, kw: str, args: list[str], bf: BFlags) -> Command:
    device = bf.add_strings("device")
    mount = bf.add_strings("mount")
    network = bf.add_string("network", "default")
    security = bf.add_string("security", "sandbox")
    bf.parse()
    devices = [parse_device(v) for v in device.values]
    mounts = [parse_mount(v) for v in mount.values]
    if network.value not in NETWORK_MODES:
        raise InstructionError(f"invalid network mode {go_quote(network.value)}")
    if security.value not in SECURITY_MODES:
        raise InstructionError(f"security {go_quote(security.value)} is not valid")
    return RunCommand(
        cmd=handle_json_args(args, node.json),
        shell_form=not node.json,
        heredocs=[msgspec.structs.replace(h) for h in node.heredocs],
        mounts=mounts,
        network=network.value if network.used else None,
        security=security.value if security.used else None,
        devices=devices,
        flags_used=bf.used(),
    )


def _parse_healthcheck(node: Node, kw: str, args: list[str], bf: BFlags) -> Command:
    if not args:
        raise _at_least_one("HEALTHCHECK")
    typ = go_upper(args[0])
    rest = args[1:]
    if typ == "NONE":
        if rest:
            raise InstructionError("HEALTHCHECK NONE takes no arguments")
        return HealthcheckCommand(test=["NONE"])
    fl = {n: bf.add_string(n) for n in ("interval", "timeout", "start-period", "start-interval")}
    retries_flag = bf.add_string("retries")
    bf.parse()
    if typ != "CMD":
        raise InstructionError(f"Unknown type {go_quote(typ)} in HEALTHCHECK (try CMD)")
    cmd = handle_json_args(rest, node.json)
    if not cmd:
        raise InstructionError("Missing command after HEALTHCHECK CMD")
    test = ["CMD" if node.json else "CMD-SHELL", *cmd]
    durations = {n: parse_opt_interval(n, f.value) for n, f in fl.items()}
    retries = 0
    if retries_flag.value:
        try:
            retries = parse_go_int(retries_flag.value, 32)
        except ValueError as err:
            raise InstructionError(str(err)) from None
        if retries < 0:
            raise InstructionError(f"--retries cannot be negative ({retries})")
    return HealthcheckCommand(
        test=test, retries=retries, interval=durations["interval"],
        timeout=durations["timeout"], start_period=durations["start-period"],
        start_interval=durations["start-interval"])


# One parser per keyword (lower case); each checks its arguments and flags in
# upstream's order, so the first error reported is the one BuildKit reports.
_PARSERS: dict[str, Callable[[Node, str, list[str], BFlags], Command]] = {
    "from": _parse_from,
    "env": _parse_env_label,
    "label": _parse_env_label,
    "maintainer": _parse_maintainer,
    "add": _parse_copy,
    "copy": _parse_copy,
    "onbuild": _parse_onbuild,
    "workdir": _parse_one_word,
    "user": _parse_one_word,
    "stopsignal": _parse_one_word,
    "run": _parse_run,
    "cmd": _parse_cmd_entrypoint,
    "entrypoint": _parse_cmd_entrypoint,
    "healthcheck": _parse_healthcheck,
    "expose": _parse_expose,
    "volume": _parse_volume,
    "arg": _parse_arg,
    "shell": _parse_shell,
}


def parse_instruction(node: Node, path: str = "Dockerfile") -> Command:
    """A parser node → its typed command (``FromCommand`` for FROM).

    Raises DockerfileError(message, path, node.start_line).
    """
    try:
        return _parse(node)
    except InstructionError as err:
        raise DockerfileError(str(err), path, node.start_line or None) from None

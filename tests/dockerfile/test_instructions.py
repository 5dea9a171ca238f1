"""Typed instructions: the instruction rows of instruction_cases.json, flags,
mounts, devices, and per-instruction expansion."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from builder.dockerfile import (
    AddCommand,
    ArgCommand,
    CopyCommand,
    EnvCommand,
    ExposeCommand,
    HealthcheckCommand,
    LabelCommand,
    Mount,
    RunCommand,
    UserCommand,
    parse_text,
)
from builder.dockerfile.flags import BFlags, InstructionError, parse_go_duration
from builder.dockerfile.instructions import handle_json_args, parse_instruction, parse_opt_interval
from builder.dockerfile.mounts import parse_device, parse_mount
from builder.dockerfile.parser import Node, parse
from builder.errors import DockerfileError

DATA = Path(__file__).resolve().parents[2] / "testdata" / "buildkit" / "parser"
CASES = json.loads((DATA / "instruction_cases.json").read_text(encoding="utf-8"))


def rows(api: str) -> list[dict]:
    return [c for c in CASES if c["api"] == api]


def test_every_case_has_a_test() -> None:
    handled = {
        "parseWords", "Parse", "parseJSON", "parseNameVal",  # test_parser.py
        "ParseInstruction", "parseOptInterval", "instructions.Parse", "Parse+instructions.Parse",
        "BFlags", "handleJSONArgs", "ParseDevice",
    }  # fmt: skip
    assert {c["api"] for c in CASES} == handled
    assert len(CASES) == 85


def _node(row: dict) -> Node:
    if "node" in row:
        n = row["node"]
        return Node(
            n["value"],
            list(n["args"]),
            flags=list(n["flags"]),
            json=bool((n["attributes"] or {}).get("json")),
            original=n["original"],
        )
    return parse(row["dockerfile"]).nodes[row["child"]]  # parse_ok


@pytest.mark.parametrize("row", rows("ParseInstruction"), ids=lambda r: r["id"])
def test_parse_instruction(row: dict) -> None:
    node = _node(row)
    if row["error"]:
        with pytest.raises(DockerfileError) as info:
            parse_instruction(node)
        if "error_equals" in row:
            assert info.value.message == row["error_equals"]
        if "error_contains" in row:
            assert row["error_contains"] in info.value.message
        return
    cmd = parse_instruction(node)
    exp = row["expected"]
    if exp["type"] == "HealthCheckCommand":
        assert isinstance(cmd, HealthcheckCommand)
        assert cmd.test == exp["health_test"]
    else:
        assert isinstance(cmd, RunCommand)
        assert cmd.flags_used == exp["flags_used"]


def test_unknown_instruction_message() -> None:
    with pytest.raises(DockerfileError) as info:
        parse_instruction(parse("FOO bar").nodes[0])
    assert info.value.message == "unknown instruction: FOO (did you mean FROM?)"
    with pytest.raises(DockerfileError) as info:
        parse_instruction(parse("fron bar").nodes[0])
    assert info.value.message == "unknown instruction: fron (did you mean from?)"


@pytest.mark.parametrize("row", rows("parseOptInterval"), ids=lambda r: r["id"])
def test_parse_opt_interval(row: dict) -> None:
    if row["error"]:
        with pytest.raises(InstructionError) as info:
            parse_opt_interval(row["flag_name"], row["input"])
        assert row["error_contains"] in str(info.value)
        assert str(info.value) == 'Interval "interval" cannot be less than 1ms'
    else:
        parse_opt_interval(row["flag_name"], row["input"])


@pytest.mark.parametrize(
    ("text", "ns"),
    [("1h30m", 5_400_000_000_000), ("1.5s", 1_500_000_000), ("-2ms", -2_000_000), ("0", 0),
     ("300us", 300_000), ("1µs", 1000), (".5m", 30_000_000_000)],
)  # fmt: skip
def test_go_durations(text: str, ns: int) -> None:
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "1.2.3s", "--1s", "."])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError, match="time: "):
        parse_go_duration(text)


@pytest.mark.parametrize("row", rows("instructions.Parse"), ids=lambda r: r["id"])
def test_doc_comments(row: dict) -> None:
    df = parse_text(row["dockerfile"])
    exp = row["expected"]
    for st_exp in exp["stages"]:
        stage = df.stages[st_exp["index"]]
        assert stage.doc_comment == st_exp["doc_comment"]
        for cmd_exp in st_exp["commands"]:
            cmd = stage.commands[cmd_exp["index"]]
            assert isinstance(cmd, ArgCommand)
            for arg in cmd_exp["args"]:
                assert cmd.args[arg["index"]][0] == arg["key"]
                assert cmd.doc_comments[arg["index"]] == arg["doc_comment"]
    for meta_exp in exp["meta_args"]:
        meta = df.meta_args[meta_exp["index"]]
        for arg in meta_exp["args"]:
            assert meta.args[arg["index"]][0] == arg["key"]
            assert meta.doc_comments[arg["index"]] == arg["doc_comment"]


@pytest.mark.parametrize("row", rows("Parse+instructions.Parse"), ids=lambda r: r["id"])
def test_nil_linter_no_crash(row: dict) -> None:
    for cmd in row["commands"]:
        for template in row["line_templates"]:
            text = row["dockerfile_prefix"] + template.format(cmd=cmd)
            with contextlib.suppress(DockerfileError):
                parse_text(text)


@pytest.mark.parametrize("row", rows("BFlags"), ids=lambda r: r["id"])
def test_bflags(row: dict) -> None:
    bf = BFlags(row["args"])
    flags = {}
    for spec in row["flags"]:
        if spec["type"] == "bool":
            flags[spec["name"]] = bf.add_bool(spec["name"], spec["default"])
        else:
            flags[spec["name"]] = bf.add_string(spec["name"], spec["default"])
    if row["error"]:
        with pytest.raises(InstructionError):
            bf.parse()
        return
    bf.parse()
    exp = row["expected"]
    for name, value in exp.get("values", {}).items():
        assert flags[name].value == value
    for name, value in exp.get("is_true", {}).items():
        assert flags[name].is_true is value
    for name, value in exp.get("used", {}).items():
        assert flags[name].used is value
    if "used_sorted" in row["asserts"]:
        assert sorted(bf.used()) == exp["used_sorted"]


@pytest.mark.parametrize("row", rows("handleJSONArgs"), ids=lambda r: r["id"])
def test_handle_json_args(row: dict) -> None:
    assert handle_json_args(row["args"], bool((row["attributes"] or {}).get("json"))) == (
        row["expected"]
    )


@pytest.mark.parametrize("row", rows("ParseDevice"), ids=lambda r: r["id"])
def test_parse_device(row: dict) -> None:
    if row["error"]:
        with pytest.raises(InstructionError) as info:
            parse_device(row["input"])
        assert str(info.value) == row["error_equals"]
        return
    dev = parse_device(row["input"])
    assert {"name": dev.name, "required": dev.required} == row["expected"]


def one(text: str):  # type: ignore[no-untyped-def]
    return parse_text("FROM a\n" + text + "\n").stages[0].commands[0]


def test_unknown_flag_suggestion() -> None:
    with pytest.raises(DockerfileError) as info:
        one("COPY --chownn=1 a b")
    assert info.value.message == "unknown flag: --chownn (did you mean chown?)"
    assert info.value.line == 2


def test_copy_and_add_flags() -> None:
    c = one("COPY --from=build --chown=1:2 --chmod=755 --link --exclude=*.md --exclude=x "
            "--parents a b /dst/")  # fmt: skip
    assert isinstance(c, CopyCommand)
    assert (c.from_, c.chown, c.chmod, c.link, c.exclude, c.parents) == (
        "build", "1:2", "755", True, ["*.md", "x"], True)  # fmt: skip
    assert (c.sources, c.dest, c.original) == (["a", "b"], "/dst/", c.original)
    a = one("ADD --checksum=sha256:abc --keep-git-dir=false --unpack https://x/y.tar /z")
    assert isinstance(a, AddCommand)
    assert (a.checksum, a.keep_git_dir, a.unpack, a.chown) == ("sha256:abc", False, True, None)
    with pytest.raises(DockerfileError, match="unknown flag: --from"):
        one("ADD --from=x a b")


def test_run_flags_and_mounts() -> None:
    r = one("RUN --mount=type=cache,target=/root/.cache,sharing=locked,id=pip "
            "--mount=type=secret,id=tok,env=TOKEN --network=none --security=insecure "
            "pip x")  # fmt: skip
    assert isinstance(r, RunCommand)
    assert r.network == "none" and r.security == "insecure"
    assert r.cmd == ["pip x"] and r.shell_form
    cache, secret = r.mounts
    assert (cache.type, cache.target, cache.sharing, cache.id, cache.readonly) == (
        "cache", "/root/.cache", "locked", "pip", False)  # fmt: skip
    assert (secret.type, secret.id, secret.env, secret.readonly) == ("secret", "tok", "TOKEN", True)
    assert one("RUN echo").network is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type=bind,target=/x,bind-propagation=rshared",
         "unexpected key 'bind-propagation' in 'bind-propagation=rshared'"),
        ("type=bind,target=/x,options=ro", "unexpected key 'options' in 'options=ro'"),
        ("type=bnd,target=/x", 'unsupported mount type "bnd" (did you mean bind?)'),
        ("type=cache,target=/x,sharing=lockd",
         'unsupported sharing value "lockd" (did you mean locked?)'),
        ("type=bind,target=/x,uid=0", 'uid not allowed for "bind" type mounts'),
        ("type=cache,target=/x,mode=999", "invalid value 999 for mode"),
        ("type=bind,target=/x,required", "unexpected key 'required' for mount type 'bind'"),
        ("type=tmpfs,target=/x,size=lots", "invalid value for size: lots"),
        ("type=secret", "invalid secret mount. one of source, target required"),
        ("type=secret,id=a,from=b", "secret mount should not have a from"),
        ("type=bind,target=/x,sharing=shared", "invalid cache sharing set for bind mount"),
        ("type=bind,from=$X,target=/x",
         "'from' doesn't support variable expansion, define alias stage instead"),
        ("type=bind,target=/x,foo", "invalid field 'foo' must be a key=value pair"),
        ("'\"target=/x'", 'failed to parse csv mounts: extraneous or missing " in quoted-field'),
        ("'target=\"/x'", 'failed to parse csv mounts: bare " in non-quoted-field'),
        ("target=/x,targt=/y", "unexpected key 'targt' in 'targt=/y' (did you mean target?)"),
    ],
)  # fmt: skip
def test_bad_mounts(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        one(f"RUN --mount={text} true")
    assert info.value.message == message


def test_mount_values_with_variables_wait_for_expansion() -> None:
    r = one("RUN --mount=type=$T,target=$DIR,uid=$U true")
    assert isinstance(r, RunCommand)
    env = {"T": "cache", "DIR": "/c", "U": "1000"}
    expanded = r.expand(lambda w: expand_word(w, env), lambda w: [expand_word(w, env)])
    (m,) = expanded.mounts  # type: ignore[attr-defined]
    assert (m.type, m.target, m.uid) == ("cache", "/c", 1000)
    with pytest.raises(DockerfileError, match='uid not allowed for "bind"'):
        r.expand(lambda w: expand_word(w, {**env, "T": "bind"}), lambda w: [w])


def test_mount_defaults() -> None:
    assert parse_mount("target=/x") == Mount(type="bind", target="/x", readonly=True,
                                             raw="target=/x")  # fmt: skip
    assert parse_mount("type=tmpfs,dst=/t,size=1g,rw=false").size == 1 << 30
    assert parse_mount('"type=cache","target=/a,b"').target == "/a,b"


def expand_word(word: str, env: dict[str, str]) -> str:
    from builder.dockerfile.expand import ShellLex

    return ShellLex().process_word(word, env)


def expand_words(word: str, env: dict[str, str]) -> list[str]:
    from builder.dockerfile.expand import ShellLex

    return ShellLex().process_words(word, env)


def test_expand_covers_exactly_buildkit_fields() -> None:
    env = {"A": "1", "B": "two words"}

    def ew(w: str) -> str:
        return expand_word(w, env)

    def ews(w: str) -> list[str]:
        return expand_words(w, env)

    e = one('ENV K$A="$B" L=x').expand(ew, ews)
    assert isinstance(e, EnvCommand) and e.pairs == [("K1", "two words"), ("L", "x")]
    lbl = one("LABEL k=$A").expand(ew, ews)
    assert isinstance(lbl, LabelCommand) and lbl.pairs == [("k", "1")]
    c = one("COPY --chown=$A --from=x src$A /d$A/").expand(ew, ews)
    assert isinstance(c, CopyCommand)
    assert (c.sources, c.dest, c.chown, c.from_) == (["src1"], "/d1/", "1", "x")
    x = one("EXPOSE $B 80").expand(ew, ews)
    assert isinstance(x, ExposeCommand) and x.ports == ["two", "words", "80"]
    u = one("USER ${A}:$A").expand(ew, ews)
    assert isinstance(u, UserCommand) and u.user == "1:1"
    r = one("RUN echo $A").expand(ew, ews)
    assert isinstance(r, RunCommand) and r.cmd == ["echo $A"]
    arg = one("ARG X=$A Y").expand(ew, ews)
    # ARG defaults are expanded once, when used (builder.engine.dispatch), never here.
    assert isinstance(arg, ArgCommand) and arg.args == [("X", "$A"), ("Y", None)]
    assert one("WORKDIR /$A").expand(ew, ews).path == "/1"  # type: ignore[attr-defined]
    assert one("VOLUME /$A /b").expand(ew, ews).paths == ["/1", "/b"]  # type: ignore[attr-defined]
    assert one("STOPSIGNAL SIG$A").expand(ew, ews).signal == "SIG1"  # type: ignore[attr-defined]
    assert one("CMD echo $A").expand(ew, ews).cmd == ["echo $A"]  # type: ignore[attr-defined]
    assert CopyCommand.expanded_fields == ("sources", "dest", "chown", "chmod", "source_heredocs")
    assert RunCommand.expanded_fields == ("mounts",)


def test_heredoc_source_expansion_uses_raw_expander() -> None:
    c = one("COPY <<A <<'B' /d/\n$X\nA\n$X\nB")
    out = c.expand(lambda w: w, lambda w: [w], lambda w: w.replace("$X", "1"))
    assert [h.content for h in out.source_heredocs] == ["1\n", "$X\n"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CONNECT x", 'Unknown type "CONNECT" in HEALTHCHECK (try CMD)'),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
        ("HEALTHCHECK --retries=x CMD x", 'strconv.ParseInt: parsing "x": invalid syntax'),
        ("HEALTHCHECK --interval=1 CMD x", 'time: missing unit in duration "1"'),
        ("SHELL sh -c", "SHELL requires the arguments to be in JSON form"),
        ("SHELL []", "SHELL requires at least one argument"),
        ("FROM a AS 1x", 'invalid name for build stage: "1x", name can\'t start with a number or '
                         "contain symbols"),
        ("FROM a b", "FROM requires either one or three arguments"),
        ("RUN --network=bridge x", 'invalid network mode "bridge"'),
        ("VOLUME [\"\"]", "VOLUME specified can not be an empty string"),
        ("ARG =x", "ARG names can not be blank"),
        ("COPY --link=maybe a b", "expecting boolean value for flag --link, not: maybe"),
        ("COPY --from a b", "missing a value on flag: --from"),
        ("COPY --from=a --from=b a b", "duplicate flag specified: --from"),
    ],
)  # fmt: skip
def test_instruction_errors(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse_text("FROM a\n" + text + "\n")
    assert info.value.message == message
    assert info.value.line == 2


def test_healthcheck_fields() -> None:
    h = one("HEALTHCHECK --interval=5s --timeout=3s --start-period=1m --start-interval=2s "
            "--retries=3 CMD [\"curl\", \"-f\", \"x\"]")  # fmt: skip
    assert isinstance(h, HealthcheckCommand)
    assert h.test == ["CMD", "curl", "-f", "x"]
    assert (h.interval, h.timeout, h.start_period, h.start_interval, h.retries) == (
        5 * 10**9, 3 * 10**9, 60 * 10**9, 2 * 10**9, 3)  # fmt: skip
    assert one("HEALTHCHECK NONE").test == ["NONE"]  # type: ignore[attr-defined]


def test_common_fields_and_original() -> None:
    df = parse_text("FROM a\nrun  apt-get \\\n  update\nexpose 80 443 22\n")
    run, expose = df.stages[0].commands
    assert (run.keyword, run.name, run.line, run.end_line) == ("run", "run", 2, 3)
    assert run.original == "run  apt-get   update"
    assert expose.ports == ["22", "443", "80"]  # type: ignore[attr-defined]


def test_onbuild_errors_and_expression() -> None:
    o = one("ONBUILD  run echo hi")
    assert o.expression == "run echo hi"  # type: ignore[attr-defined]
    with pytest.raises(DockerfileError, match="MAINTAINER isn't allowed as an ONBUILD trigger"):
        one("ONBUILD MAINTAINER x")

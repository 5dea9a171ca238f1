"""Catalogue 1.D: hostile Dockerfiles, one test per row.

Parser rows run at unit level (``parse_text`` and ``plan_build``): every
failure is a ``DockerfileError`` with a line number, never another exception,
and each case finishes within a time bound.  Rows whose effect is only visible
in a build (values as data, ARGs as env, ONBUILD, image config) and the CLI
contract (one line ``FILE:LINE: message``, non-zero exit, no traceback) run as
real builds against the busybox store.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from helpers import run_cli
from security.oracle import TarMaker, build, docker_archive, leaked, one_line_error

from builder.dockerfile import RunCommand, parse_text, plan_build
from builder.errors import DockerfileError

BOUND = 10.0   # seconds any one parse may take, whatever the input

root_builds = [pytest.mark.root, pytest.mark.overlay, pytest.mark.slow,
               pytest.mark.skipif(os.geteuid() != 0, reason="needs root: overlay mounts")]


def parse(text: str | bytes, **plan):
    """Parse and plan; the only exception allowed is DockerfileError."""
    start = time.monotonic()
    try:
        df = parse_text(text)
        plan_build(df, **plan)
        return df
    finally:
        assert time.monotonic() - start < BOUND


def refused(text: str | bytes, match: str, line: int | None = None, **plan) -> DockerfileError:
    with pytest.raises(DockerfileError, match=match) as info:
        parse(text, **plan)
    if line is not None:
        assert info.value.line == line
    assert "\n" not in str(info.value)
    return info.value


def cli_error(bstore: Path, ctx: Path, dockerfile: str | bytes, *args: str) -> str:
    """Build through the CLI, expecting ``FILE:LINE: message`` on one line."""
    text = dockerfile if isinstance(dockerfile, str) else dockerfile.decode("utf-8", "replace")
    err = one_line_error(build(bstore, ctx, text, None, *args, check=False, timeout=120))
    assert re.search(r"Dockerfile\.\w+(:\d+)?: ", err), err
    return err


@pytest.fixture
def ctx(sandbox) -> Path:
    (sandbox.dest / "a").write_text("a")
    return sandbox.dest


def image_config(bstore: Path, image: str, tmp_path: Path) -> dict:
    """The image's OCI config, read from a ``pybuild save`` archive."""
    import tarfile

    archive = tmp_path / f"{image}.tar"
    run_cli("save", "-o", str(archive), image, root=bstore)
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        return json.load(outer.extractfile(manifest["Config"]))  # type: ignore[arg-type]


# ------------------------------------------------------------------ D01

def test_D01_line_over_64k_is_an_error():
    refused("FROM busybox\nLABEL test=" + "a" * 65536 + "\n",
            "line greater than max allowed size of 65535", line=2)
    parse("FROM busybox\nLABEL test=" + "a" * (65535 - len("LABEL test=")) + "\n")


@pytest.mark.parametrize("_", [pytest.param(None, marks=root_builds)])
def test_D01_line_over_64k_cli(bstore, ctx, _):
    err = cli_error(bstore, ctx, "FROM busybox\nLABEL test=" + "a" * 70000 + "\n")
    assert ":2: " in err and "65535" in err and len(err) < 300


# ------------------------------------------------------------------ D02

def test_D02_long_continuations_are_linear():
    body = "RUN a \\\n" + "a \\\n\n# comment\n" * 100_000 + "end\n"
    df = parse("FROM busybox\n" + body)
    run = df.stages[0].commands[0]
    assert isinstance(run, RunCommand) and run.cmd[0].count("a") == 100_001
    assert any("continuation" in str(w).lower() for w in df.warnings)


def test_D02_instruction_count_limit():
    refused("FROM busybox\n" + "ENV A=1\n" * 100_001, "more than .* instructions")


# ------------------------------------------------------------------ D03

@pytest.mark.parametrize("text", [
    "ARG V=1\rFROM x:$V", "FROM busybox\rRUN true\r", b"\xef\xbb\xbfFROM busybox\n",
    "\ufeffFROM busybox\n", "FROM busybox\nRUN echo a\x00b\n", b"FROM busybox\nRUN \xff\xfe\n",
    "\r\r\r", "\x00", "FROM busybox\r\n\r\nRUN true\r\n"])
def test_D03_odd_line_endings_bom_nul(text):
    try:
        parse(text)
    except DockerfileError as err:
        assert err.line is None or err.line >= 1


def test_D03_bom_is_skipped():
    df = parse(b"\xef\xbb\xbfFROM busybox AS b\n")
    assert df.stages[0].name == "b"


# ------------------------------------------------------------------ D04

@pytest.mark.parametrize("_", [pytest.param(None, marks=root_builds)])
def test_D04_values_with_newlines_stay_data(bstore, ctx, tmp_path, _):
    value = "a\nRUN touch /pwned\r\nLABEL evil=1"
    out = tmp_path / "out"
    build(bstore, ctx, 'FROM busybox\nARG X\nENV Y=$X\nLABEL l=$X\nRUN echo "$X" > /x\n', out,
          "--build-arg", f"X={value}", "-t", "d04")
    assert (out / "x").read_bytes() == (value + "\n").encode()
    assert not (out / "pwned").exists()
    config = image_config(bstore, "d04", tmp_path)
    assert f"Y={value}" in config["config"]["Env"]
    assert config["config"]["Labels"] == {"l": value}
    # One history entry per instruction: the value never became instructions.
    base = image_config(bstore, "busybox", tmp_path)
    assert len(config["history"]) == len(base["history"]) + 4


# ------------------------------------------------------------------ D05

@pytest.mark.parametrize("_", [pytest.param(None, marks=root_builds)])
def test_D05_build_args_reach_run_as_env_not_text(bstore, ctx, tmp_path, _):
    out = tmp_path / "out"
    build(bstore, ctx, "FROM busybox\nARG V\nRUN echo $V > /out && echo \"$V\" >> /out\n", out,
          "--build-arg", "V=$(touch /pwn)`touch /pwn2`")
    assert (out / "out").read_text() == "$(touch /pwn)`touch /pwn2`\n" * 2
    assert not (out / "pwn").exists() and not (out / "pwn2").exists()


# ------------------------------------------------------------------ D06

@pytest.mark.parametrize(("text", "line"), [
    ("FROM ${0:+0}\n", 1), ("FROM busybox\nCOPY \\ \n", 2), ("FROM \n", 1),
    ("FROM busybox\nCOPY\n", 2), ("FROM busybox\nADD --chown\n", 2),
    ("FROM busybox AS\n", 1), ("FROM busybox\nHEALTHCHECK --interval=\n", 2),
    ("FROM $\n", 1)])
def test_D06_fuzz_crashers_are_parse_errors(text, line):
    err = refused(text, ".")
    assert err.line in (None, line)


@pytest.mark.parametrize("_", [pytest.param(None, marks=root_builds)])
def test_D06_empty_destination_after_expansion(bstore, ctx, tmp_path, _):
    # BuildKit's testEmptyDestDir: an empty dest is the workdir.
    out = tmp_path / "out"
    build(bstore, ctx, 'FROM busybox\nENV foo=""\nWORKDIR /w\nCOPY a $foo\n', out)
    assert (out / "w" / "a").read_text() == "a"


@pytest.mark.parametrize("_", [pytest.param(None, marks=root_builds)])
@pytest.mark.parametrize("step", ["EXPOSE ${", "COPY a ${x:?unset}", "ENV A=${B:?}",
                                  "WORKDIR ${", "USER ${a"])
def test_D06_bad_expansions_at_build_time(bstore, ctx, step, _):
    assert ":2: " in cli_error(bstore, ctx, f"FROM busybox\n{step}\n")


# ------------------------------------------------------------------ D07

def test_D07_expansion_blow_up_is_capped():
    text = "FROM busybox\nARG A=xxxxxxxxxx\n" + "ENV A=$A$A$A$A\n" * 30
    df = parse(text)   # expansion happens when the build runs the stage
    from builder.dockerfile.expand import MAX_EXPANSION, ExpansionError, ShellLex

    lex = ShellLex()
    env = {"A": "x" * (MAX_EXPANSION // 2 + 1)}
    with pytest.raises(ExpansionError, match="larger than"):
        lex.process_word("$A$A$A$A", env)
    assert df.stages[0].commands


@pytest.mark.parametrize("_", [pytest.param(None, marks=root_builds)])
def test_D07_expansion_blow_up_cli(bstore, ctx, _):
    start = time.monotonic()
    err = cli_error(bstore, ctx, "FROM busybox\nARG A=xxxxxxxxxx\n" + "ENV A=$A$A$A$A\n" * 30)
    assert "larger than" in err and time.monotonic() - start < 60


# ------------------------------------------------------------------ D08

@pytest.mark.parametrize(("text", "match"), [
    ("FROM busybox\nRUN <<EOF\necho hi\n", "unterminated heredoc"),
    ("FROM busybox\nCOPY /foo <<EOF\nx\nEOF\n", "cannot accept a heredoc as a destination"),
    ("FROM busybox\nCOPY <<EOF\nx\nEOF\n", "."),
])
def test_D08_heredoc_errors(text, match):
    refused(text, match, line=2)


def test_D08_heredoc_tabs_and_many_heredocs():
    df = parse("FROM busybox\nRUN <<-EOF\n\techo hi\n\tEOF\n")
    heredoc = df.stages[0].commands[0].heredocs[0]
    assert heredoc.name == "EOF"
    many = ("FROM busybox\nRUN " + " ".join(f"<<E{i}" for i in range(50)) + "\n"
            + "".join(f"x{i}\nE{i}\n" for i in range(50)))
    run = parse(many).stages[0].commands[0]
    assert len(run.heredocs) == 50


# ------------------------------------------------------------------ D09

@pytest.mark.parametrize("text", ['CMD ["a", ["b"]]', 'RUN ["a", 1]', 'ENTRYPOINT ["a", {}]'])
def test_D09_json_with_non_strings_is_an_error(text):
    refused(f"FROM busybox\n{text}\n", "must be comprised of strings only", line=2)


@pytest.mark.parametrize("text", ["CMD [", 'CMD ["a"', "RUN [ true", 'CMD ["a" "b"]'])
def test_D09_invalid_json_falls_back_to_shell_form(text):
    cmd = parse(f"FROM busybox\n{text}\n").stages[0].commands[0]
    assert cmd.shell_form and cmd.cmd == [text.split(" ", 1)[1]]


# ------------------------------------------------------------------ D10, D11

@pytest.mark.parametrize(("flags", "match"), [
    ("--mont=type=cache,target=/x", "did you mean mount"),
    ("--mount=typ=tmpfs,target=/x", "did you mean type"),
    ("--mount=type=tmp,target=/x", "did you mean tmpfs"),
    ("--mount=type=cache,target=/x,sharng=locked", "unexpected key"),
    ("--networks=host", "unknown flag"),
])
def test_D10_unknown_flags_and_keys(flags, match):
    refused(f"FROM busybox\nRUN {flags} true\n", match, line=2)


@pytest.mark.parametrize("mount", [
    "type=cache,target=/x,bind-propagation=suid", "type=bind,target=/x,options=suid",
    "type=cache,target=/x,sharing=evil", "type=tmpfs,target=/x,size=-1",
    "type=cache,target=/x,mode=99999", "type=cache,target=/x,uid=-1",
    "type=bind,target=/x,suid", "type=cache,target=/x,exec=1"])
def test_D11_mount_option_allowlist(mount):
    refused(f"FROM busybox\nRUN --mount={mount} true\n", ".", line=2)


@pytest.mark.parametrize("_", [pytest.param(None, marks=root_builds)])
def test_D11_rw_secret_never_writes_back(bstore, ctx, tmp_path, _):
    # BuildKit accepts rw on a secret mount; the secret source must stay untouched.
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    out = tmp_path / "out"
    build(bstore, ctx, "FROM busybox\nRUN --mount=type=secret,id=s,rw "
          "sh -c 'echo pwned > /run/secrets/s; true'\n", out,
          "--secret", f"id=s,src={secret}")
    assert secret.read_text() == "s3cret"
    assert not (out / "run" / "secrets" / "s").exists()


# ------------------------------------------------------------------ D12

@pytest.mark.parametrize("_", [pytest.param(None, marks=root_builds)])
@pytest.mark.parametrize("step", ["USER 4294967296\nRUN true", "USER 0:$(x)\nRUN true",
                                  "COPY --chown=-1:-1 a /a", "COPY --chown=4294967296 a /a",
                                  "USER -1\nRUN true"])
def test_D12_ids_validated(bstore, ctx, step, _):
    cli_error(bstore, ctx, f"FROM busybox\n{step}\n")


@pytest.mark.parametrize("_", [pytest.param(None, marks=root_builds)])
def test_D12_volume_and_workdir_stay_in_the_rootfs(bstore, ctx, sandbox, tmp_path, _):
    out = tmp_path / "out"
    build(bstore, ctx, f'FROM busybox\nVOLUME ["/../../../etc", "/../..{sandbox.absent}"]\n'
          "WORKDIR ../../../../../tmp/wd\nRUN pwd > /pwd\n", out, "-t", "d12")
    assert (out / "pwd").read_text() == "/tmp/wd\n"
    volumes = image_config(bstore, "d12", tmp_path)["config"].get("Volumes") or {}
    for path in volumes:
        # Stored as data, and whatever a runtime makes of it, it cleans to a rootfs path.
        assert os.path.normpath("/" + path).startswith("/")
    assert leaked(out) == []


# ------------------------------------------------------------------ D13

@pytest.mark.parametrize(("text", "match"), [
    ("", "cannot be empty"), ("# only\n# comments\n", "no instructions"),
    ("\n\n   \n", "."), ("FROM busybox\nENV\n", "ENV requires at least one argument"),
    ("FROM busybox\nENV A\n", "."), ("RUN true\n", "no build stage"),
    ("ARG A=1\n", "no stages")])
def test_D13_empty_or_stageless(text, match):
    refused(text, match)


@pytest.mark.parametrize("_", [pytest.param(None, marks=root_builds)])
@pytest.mark.parametrize("text", ["", "# only comments\n", "RUN true\n"])
def test_D13_cli_one_line(bstore, ctx, text, _):
    cli_error(bstore, ctx, text)


# ------------------------------------------------------------------ D14

@pytest.mark.parametrize("_", [pytest.param(None, marks=root_builds)])
@pytest.mark.parametrize("how", ["directive", "build-arg"])
def test_D14_syntax_frontends_never_fetched(bstore, ctx, sandbox, tmp_path, how, _):
    # A frontend reference on an unreachable registry: using it would hang or fail.
    ref = f"203.0.113.1:5000/attacker/frontend:{sandbox.absent.name}"
    text = "FROM busybox\nRUN true\n"
    args: list[str] = []
    if how == "directive":
        text = f"# syntax={ref}\n" + text
    else:
        args = ["--build-arg", f"BUILDKIT_SYNTAX={ref}"]
    start = time.monotonic()
    result = build(bstore, ctx, text, tmp_path / "out", *args, timeout=60)
    assert time.monotonic() - start < 30
    assert b"Traceback" not in result.stderr
    assert b"FrontendIgnored" in result.stderr and ref.encode() in result.stderr


@pytest.mark.parametrize(("text", "args", "warned"), [
    ("# syntax=attacker/frontend\nFROM busybox\n", {}, True),
    ("FROM busybox\n", {"BUILDKIT_SYNTAX": "evil.example/x:1"}, True),
    ("# syntax=docker/dockerfile:1\nFROM busybox\n", {}, False),
    ("# syntax=docker.io/docker/dockerfile:1.7@sha256:00\nFROM busybox\n", {}, False),
    ("FROM busybox\n", {}, False)])
def test_D14_syntax_is_ignored_with_a_warning(text, args, warned):
    plan = plan_build(parse_text(text), build_args=args)
    assert any(w.rule == "FrontendIgnored" for w in plan.warnings) == warned


# ------------------------------------------------------------------ D15

@pytest.mark.parametrize("_", [pytest.param(None, marks=root_builds)])
def test_D15_hostile_base_config_is_data(bstore, sandbox, busybox_tar, tmp_path, _):
    absent = str(sandbox.absent)
    config = {
        "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"PYBUILD_ROOT={absent}",
                f"LD_PRELOAD={absent}/x.so", f"TMPDIR={absent}"],
        "Labels": {"com.docker.image.source.entrypoint": f"$(touch {absent})",
                   "x": "y\n\u0000z"},
        "Volumes": {f"/../../..{absent}": {}},
        "Healthcheck": {"Test": ["CMD-SHELL", f"touch {absent}"]},
        "OnBuild": ["RUN echo onbuild > /onbuild-ran",
                    f"COPY a {absent}/a",
                    "RUN --mount=type=bind,target=/ctx,source=. cp /ctx/a /from-ctx"],
        "Cmd": ["/bin/sh"],
    }
    root = tmp_path / "store"
    archive = tmp_path / "evil.tar"
    archive.write_bytes(docker_archive([busybox_tar.read_bytes(),
                                        TarMaker().add("marker", content=b"m").data()],
                                       "evil:latest", config))
    run_cli("load", "-i", str(archive), root=root)
    (sandbox.dest / "a").write_text("ctx-a")
    out = tmp_path / "out"
    build(root, sandbox.dest, "FROM evil\nRUN test -f /onbuild-ran\n", out)
    # Triggers ran inside the image, with the user's sandbox and context.
    assert (out / "onbuild-ran").read_text() == "onbuild\n"
    assert (out / absent.lstrip("/") / "a").read_text() == "ctx-a"
    assert (out / "from-ctx").read_text() == "ctx-a"
    # The image's PYBUILD_ROOT/TMPDIR never redirected the builder's own state.
    assert not os.path.lexists(absent)
    assert run_cli("images", root=root).returncode == 0

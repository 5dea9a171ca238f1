"""Stages, global/stage ARGs, --build-arg, --target and the stage graph."""

from __future__ import annotations

import pytest

from builder.dockerfile import (
    ArgCommand,
    Platform,
    parse_file,
    parse_text,
    plan_build,
)
from builder.errors import DockerfileError

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")

MULTI = """\
ARG GO=1.22
ARG BASE=alpine:3.19
FROM --platform=$BUILDPLATFORM golang:${GO} AS build
ARG TARGETARCH
RUN echo $TARGETARCH
FROM build AS test
RUN go test
FROM scratch AS unused
COPY --from=nope-image:1 /x /x
FROM $BASE
COPY --from=build /out /bin/app
RUN --mount=type=bind,from=test,target=/t true
"""


def plan(text: str, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("platform", ARM64)
    kw.setdefault("build_platform", AMD64)
    return plan_build(parse_text(text), **kw)


def test_stages_and_meta_args() -> None:
    df = parse_text(MULTI)
    assert [s.name for s in df.stages] == ["build", "test", "unused", None]
    assert [s.base for s in df.stages] == ["golang:${GO}", "build", "scratch", "$BASE"]
    assert df.stages[0].platform == "$BUILDPLATFORM"
    assert [a.args for a in df.meta_args] == [[("GO", "1.22")], [("BASE", "alpine:3.19")]]
    assert df.stages[0].original == "FROM --platform=$BUILDPLATFORM golang:${GO} AS build"
    assert df.stage("BUILD") is df.stages[0]


def test_plan_default_target() -> None:
    p = plan(MULTI)
    assert p.target == 3
    assert [s.stage.index for s in p.stages] == [0, 1, 3]  # "unused" is never planned
    build, test, final = p.stages
    assert (build.base, build.base_stage, build.platform) == ("golang:1.22", None, AMD64)
    assert (test.base, test.base_stage, test.dependencies) == ("build", 0, [0])
    assert (final.base, final.dependencies) == ("alpine:3.19", [0, 1])
    assert p.global_args["TARGETPLATFORM"] == "linux/arm64"
    assert p.global_args["BUILDARCH"] == "amd64"
    assert p.global_args["TARGETSTAGE"] == "default"
    assert p.images == []


def test_plan_target_and_build_args() -> None:
    p = plan(MULTI, target="Test", build_args={"GO": "1.21", "HTTP_PROXY": "http://p:3128"})
    assert [s.stage.index for s in p.stages] == [0, 1]
    assert p.stages[0].base == "golang:1.21"
    assert p.build_args["HTTP_PROXY"] == "http://p:3128"   # reaches RUN as a build arg
    assert p.warnings == []
    assert p.global_args["TARGETSTAGE"] == "Test"


def test_unused_stage_is_still_checked_for_its_from_but_not_its_images() -> None:
    p = plan(MULTI, target="unused")
    assert [s.stage.index for s in p.stages] == [2]
    assert p.images == ["nope-image:1"]


def test_stage_args_resolution() -> None:
    text = "ARG V=global\nARG ONLY\nFROM a\nARG V\nARG ONLY\nARG L=local-$V\nARG TARGETOS\n"
    df = parse_text(text)
    p = plan_build(df, platform=ARM64, build_platform=AMD64)
    env: dict[str, str] = {}

    def expand(word: str) -> str:
        from builder.dockerfile.expand import ShellLex

        return ShellLex().process_word(word, env)

    values = []
    for cmd in df.stages[0].commands:
        assert isinstance(cmd, ArgCommand)
        for key, value in p.resolve_args(cmd, expand):
            values.append((key, value))
            if value is not None:
                env[key] = value
    assert values == [("V", "global"), ("ONLY", None), ("L", "local-global"), ("TARGETOS", "linux")]
    p2 = plan_build(df, build_args={"L": "cli", "V": "x"}, platform=ARM64, build_platform=AMD64)
    assert p2.resolve_args(df.stages[0].commands[2], expand) == [("L", "cli")]  # type: ignore[arg-type]
    assert p2.resolve_args(df.stages[0].commands[0], expand) == [("V", "x")]  # type: ignore[arg-type]


def test_copy_from_index_and_image() -> None:
    p = plan("FROM a AS one\nFROM b\nCOPY --from=0 /x /x\nCOPY --from=docker.io/lib/c:1 /y /y\n")
    assert p.stages[1].dependencies == [0]
    assert p.images == ["docker.io/lib/c:1"]


def test_onbuild_trigger_dependency() -> None:
    p = plan("FROM a AS dep\nFROM b AS base\nONBUILD COPY --from=dep /x /x\nFROM base\n")
    assert [s.stage.index for s in p.stages] == [0, 1, 2]
    assert p.stages[2].dependencies == [0, 1]


def test_unused_build_arg_warns() -> None:
    p = plan("ARG VERSION\nFROM a\nARG USED\n", build_args={"VERSON": "1", "USED": "2",
                                                           "http_proxy": "x"})  # fmt: skip
    assert [w.rule for w in p.warnings] == ["UnusedBuildArg"]
    assert p.warnings[0].message == (
        "build-arg VERSON was not consumed: no ARG declares it (did you mean VERSION?)"
    )


@pytest.mark.parametrize(
    ("text", "kw", "message"),
    [
        ("FROM alpine:$VERSION\nARG VERSION=3.19\n", {},
         "FROM 'alpine:$VERSION' uses $VERSION, but no ARG VERSION is declared before the first "
         "FROM"),
        ("ARG X\nFROM $X\n", {}, "base name ($X) should not be blank"),
        ("FROM a\n", {"target": "nope"}, "target stage 'nope' could not be found"),
        ("FROM a AS build\n", {"target": "biuld"},
         "target stage 'biuld' could not be found (did you mean build?)"),
        ("FROM a\nCOPY --from=later /x /x\nFROM b AS later\n", {},
         'cannot use stage "later" from stage "stage-0": it needs to be defined before the '
         "current stage"),
        ("ARG S=a\nFROM a AS a\nFROM b\nCOPY --from=$S /x /x\n", {},
         "variable expansion is not supported for --from, define a new stage with FROM using ARG "
         "from global scope as a workaround"),
        ("FROM a\nCOPY --from=3 /x /x\n", {}, "invalid stage index 3"),
        ("FROM Alpine\n", {}, "failed to parse stage name 'Alpine': invalid reference format"),
        ("FROM --platform=$NOPE a\n", {},
         "FROM --platform '$NOPE' uses $NOPE, but no ARG NOPE is declared before the first FROM"),
        ("ARG P=linux/arm64/v8/x\nFROM --platform=$P a\n", {},
         "failed to parse platform $P: 'linux/arm64/v8/x': too many parts (expected "
         "os/arch[/variant], e.g. linux/arm64)"),
    ],
)  # fmt: skip
def test_plan_errors(text: str, kw: dict, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        plan(text, **kw)
    assert info.value.message.endswith(message), info.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the Dockerfile cannot be empty"),
        ("# only a comment\n\n", "file with no instructions"),
        ("ARG A=1\n", "dockerfile contains no stages to build"),
        ("RUN x\nFROM a\n", "no build stage in current context"),
    ],
)
def test_no_stage_errors(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse_text(text)
    assert info.value.message == message


def test_parse_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "Dockerfile.dev"
    f.write_bytes(b"FROM a\n")
    assert parse_file(f).path == str(f)
    with pytest.raises(DockerfileError, match="cannot read Dockerfile"):
        parse_file(tmp_path / "missing")


def test_platform() -> None:
    assert str(Platform()) == "linux/amd64"
    assert str(Platform.parse("linux/arm/v6")) == "linux/arm/v6"
    assert Platform.parse("linux/aarch64") == ARM64
    assert Platform.parse("arm64") == ARM64
    assert str(Platform.parse("linux/arm")) == "linux/arm/v7"
    with pytest.raises(ValueError):
        Platform.parse("linux//x")


def test_reused_stage_name_resolves_to_the_latest_earlier_one() -> None:
    p = plan("FROM a AS x\nFROM b AS x\nFROM x\n")
    assert p.stages[-1].base_stage == 1
    assert [s.stage.index for s in p.stages] == [1, 2]


def test_from_a_name_that_is_no_stage_means_an_image() -> None:
    """As in BuildKit: ``COPY --from=busybox`` copies from the image busybox:latest."""
    df = parse_text("FROM a AS build\nFROM b\nCOPY --from=busybox /x /x\n"
                    "RUN --mount=from=tools,target=/t true\n")
    plan = plan_build(df)
    assert plan.images == ["busybox", "tools"]

"""Lint rules: names, messages, lines, and the check directive."""

from __future__ import annotations

import pytest

from builder.dockerfile import RULES, lint, parse_text


def rules(text: str, **kw) -> list[tuple[str, int, str]]:  # type: ignore[no-untyped-def]
    return [(w.rule, w.line, w.message) for w in lint(parse_text(text), **kw)]


def names(text: str, **kw) -> list[str]:  # type: ignore[no-untyped-def]
    return [r for r, _, _ in rules(text, **kw)]


def test_rule_table() -> None:
    assert len({r.name for r in RULES}) == len(RULES)
    for rule in RULES:
        assert rule.url.startswith("https://docs.docker.com/go/dockerfile/rule/")
        assert rule.description
        assert callable(rule.check)


def test_clean_dockerfile_has_no_warnings() -> None:
    text = """\
FROM alpine:3.19 AS build
ARG VERSION=1
ENV APP=/app
WORKDIR $APP
COPY . .
RUN make VERSION=$VERSION
FROM scratch
COPY --from=build /app/out /out
CMD ["/out"]
"""
    assert rules(text) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM a\nCMD run me\n",
         [("JSONArgsRecommended", 2, "JSON arguments recommended for CMD to prevent unintended "
                                     "behavior related to OS signals")]),
        ('FROM a\nSHELL ["bash", "-c"]\nENTRYPOINT run me\n', []),
        ("FROM a AS Build\n", [("StageNameCasing", 1, "Stage name 'Build' should be lowercase")]),
        ("FROM a as b\n", [("FromAsCasing", 1, "'as' and 'FROM' keywords' casing do not match")]),
        ("from a AS b\n", [("FromAsCasing", 1, "'AS' and 'from' keywords' casing do not match")]),
        ("FROM a\nRUN x\nrun y\nRUN z\n",
         [("ConsistentInstructionCasing", 3,
           "Command 'run' should match the case of the command majority (uppercase)")]),
        ("FROM a AS x\nFROM b AS x\n",
         [("DuplicateStageName", 2, 'Duplicate stage name "x", stage names should be unique')]),
        ("FROM a AS scratch\n",
         [("ReservedStageName", 1,
           'Stage name should not use the same name as reserved stage "scratch"')]),
        ("FROM a\nMAINTAINER me\n",
         [("MaintainerDeprecated", 2,
           "Maintainer instruction is deprecated in favor of using label")]),
        ("FROM a\nWORKDIR app\nWORKDIR sub\n",
         [("WorkdirRelativePath", 2,
           'Relative workdir "app" can have unexpected results if the base image changes')]),
        ("FROM a\nCOPY $SRC /x\n", [("UndefinedVar", 2, "Usage of undefined variable '$SRC'")]),
        ("FROM a\nENV PATH=$PTH:/x\n",
         [("UndefinedVar", 2, "Usage of undefined variable '$PTH' (did you mean $PATH?)")]),
        ("FROM a\nARG SRC\nCOPY $SRC /x\n", []),
        ("FROM a\nCMD [\"a\"]\nCMD [\"b\"]\nHEALTHCHECK NONE\n",
         [("MultipleInstructionsDisallowed", 2,
           "Multiple CMD instructions should not be used in the same stage because only the last "
           "one will be used")]),
        ("FROM a\nENV k v\n",
         [("LegacyKeyValueFormat", 2,
           '"ENV key=value" should be used instead of legacy "ENV key value" format')]),
        ("FROM ${IMG}\n",
         [("UndefinedArgInFrom", 1, "FROM argument 'IMG' is not declared"),
          ("InvalidDefaultArgInFrom", 1,
           "Default value for ARG ${IMG} results in empty or invalid base image name")]),
        ("ARG IMAGE=a\nFROM ${IMAGES:-b}\n",
         [("UndefinedArgInFrom", 2, "FROM argument 'IMAGES' is not declared (did you mean "
                                    "IMAGE?)")]),
        ("ARG V\nFROM a:${V}\n",
         [("InvalidDefaultArgInFrom", 2,
           "Default value for ARG a:${V} results in empty or invalid base image name")]),
        ("FROM --platform=$TARGETPLATFORM a\n",
         [("RedundantTargetPlatform", 1, "Setting platform to predefined $TARGETPLATFORM in FROM "
                                         "is redundant as this is the default behavior")]),
        ("FROM --platform=linux/amd64 a\n",
         [("FromPlatformFlagConstDisallowed", 1,
           'FROM --platform flag should not use constant value "linux/amd64"')]),
        ("FROM --platform=linux/amd64 a AS build-amd64\n", []),
        ("FROM a\nARG API_TOKEN\nENV PUBLIC_KEY=x DB_PASSWORD=y\n",
         [("SecretsUsedInArgOrEnv", 2,
           'Do not use ARG or ENV instructions for sensitive data (ARG "API_TOKEN")'),
          ("SecretsUsedInArgOrEnv", 3,
           'Do not use ARG or ENV instructions for sensitive data (ENV "DB_PASSWORD")')]),
        ("FROM a\nEXPOSE 80/TCP 127.0.0.1:8080:80\n",
         [("ExposeProtoCasing", 2, "Defined protocol '80/TCP' in EXPOSE instruction should be "
                                   "lowercase"),
          ("ExposeInvalidFormat", 2, "EXPOSE instruction should not define an IP address or "
                                     "host-port mapping, found '127.0.0.1:8080:80'")]),
        ("FROM a\nRUN x \\\n\n  y\n", [("NoEmptyContinuation", 4, "Empty continuation line")]),
    ],
)  # fmt: skip
def test_rule(text: str, expected: list[tuple[str, int, str]]) -> None:
    assert rules(text) == expected


def test_workdir_inherited_from_base_stage() -> None:
    assert names("FROM a AS base\nWORKDIR /app\nFROM base\nWORKDIR rel\n") == []


def test_undefined_var_knows_image_env_and_stage_inheritance() -> None:
    text = "FROM golang AS b\nENV X=1\nWORKDIR $GOPATH\nFROM b\nCOPY $X /y\n"
    # Without the image's environment $GOPATH looks unset (and the workdir relative).
    assert names(text) == ["WorkdirRelativePath", "UndefinedVar"]
    assert names(text, image_env={"golang": {"GOPATH": "/go"}}) == []


def test_check_directive_skips_rules() -> None:
    text = "# check=skip=JSONArgsRecommended,MaintainerDeprecated\nFROM a\nCMD x\nMAINTAINER m\n"
    assert names(text) == []
    assert names("# check=skip=all\nFROM a AS X\nCMD x\n") == []
    text = "FROM a\n# check=skip=JSONArgsRecommended\nCMD x\nENTRYPOINT y\n"
    assert rules(text)[0][:2] == ("JSONArgsRecommended", 4)
    assert len(rules(text)) == 1


def test_experimental_rule_is_opt_in() -> None:
    text = "# check=experimental=InvalidDefinitionDescription\n# The base\nFROM a AS base\n"
    assert rules(text) == [
        ("InvalidDefinitionDescription", 3,
         "Comment for FROM should follow the format: `# base <description>`")
    ]  # fmt: skip
    assert names("# The base\nFROM a AS base\n") == []

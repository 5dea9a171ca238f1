"""Issue 15 point 9: the layer-hygiene rules, each with cases that must and must not
fire, the ``# check=`` directive on them, and their documentation."""

from __future__ import annotations

import re

import pytest
from helpers import REPO

from builder.dockerfile import parse_text
from builder.lint.rules import HYGIENE_RULES, WASTE_RULE, lint_dockerfile


def _found(body: str, head: str = "") -> list[tuple[str, int]]:
    """(rule, line) of every hygiene finding in ``FROM debian`` + body."""
    text = head + "FROM debian\n" + body
    ours = {r.name for r in HYGIENE_RULES}
    report = lint_dockerfile(parse_text(text.encode(), "Dockerfile"))
    return [(w.rule, w.line) for w in report.warnings if w.rule in ours]


def _rules(body: str, head: str = "") -> set[str]:
    return {rule for rule, _ in _found(body, head)}


FIRES = [
    ("AptUpdateWithoutInstall", "RUN apt-get update\n"),
    ("AptUpdateWithoutInstall", "RUN set -eux; apt-get -qq update\nRUN apt-get install -y x\n"),
    ("AptUpdateWithoutInstall", "RUN apt update && echo done\n"),
    ("AptInstallRecommends", "RUN apt-get update && apt-get install -y curl && "
                             "rm -rf /var/lib/apt/lists/*\n"),
    ("AptInstallRecommends", "RUN if true; then sudo apt-get -y install curl; fi\n"),
    ("AptListsNotCleaned", "RUN apt-get update && apt-get install -y --no-install-recommends "
                           "curl\n"),
    ("AptListsNotCleaned", "RUN apt-get update && apt-get upgrade -y && apt-get clean\n"),
    ("PipNoCacheDir", "RUN pip install flask\n"),
    ("PipNoCacheDir", "RUN python3 -m pip install -r requirements.txt\n"),
    ("PipNoCacheDir", "RUN cd /src && pip3.11 install --user .\n"),
    ("CdInsteadOfWorkdir", "RUN cd /app && make\n"),
    ("CdInsteadOfWorkdir", "RUN cd /app; make install\n"),
    ("CdInsteadOfWorkdir", "RUN cd /app\n"),
    ("CurlPipeShell", "RUN curl -fsSL https://example.com/install.sh | sh\n"),
    ("CurlPipeShell", "RUN wget -qO- https://example.com/i | sudo -E bash -s -- -y\n"),
    ("CurlPipeShell", "RUN sh -c \"$(curl -fsSL https://example.com/i)\"\n"),
    ("CurlPipeShell", "RUN bash <(curl -s https://example.com/i)\n"),
    ("CurlPipeShell", "RUN <<EOF\nset -e\ncurl -sL https://example.com/i | bash\nEOF\n"),
    ("CurlPipeShell", 'RUN ["/bin/bash", "-euxc", "curl -s https://example.com/i | sh"]\n'),
    ("ChownChmodAfterCopy", "COPY run.sh /usr/local/bin/\nRUN chmod +x /usr/local/bin/run.sh\n"),
    ("ChownChmodAfterCopy", "COPY . /app\nRUN chown -R app:app /app\n"),
    ("ChownChmodAfterCopy", "WORKDIR /app\nCOPY src ./src\nRUN chmod -R 755 src/bin\n"),
    ("ChownChmodAfterCopy", "COPY entry.sh /entry.sh\nRUN chmod 755 /entry.sh\n"),
    ("ChownChmodAfterCopy", "COPY --chown=app a.py b.py /app/\nRUN chmod 600 /app/a.py\n"),
]

QUIET = [
    ("AptUpdateWithoutInstall", "RUN apt-get update && apt-get install -y x\n"),
    ("AptUpdateWithoutInstall", "RUN echo apt-get update\n"),
    ("AptInstallRecommends", "RUN apt-get install -y --no-install-recommends curl\n"),
    ("AptInstallRecommends", "RUN apt-get -o APT::Install-Recommends=false install -y curl\n"),
    ("AptInstallRecommends", "RUN apt-get 'install' '--no-install-recommends' curl\n"),
    ("AptListsNotCleaned", "RUN apt-get update && apt-get install -y --no-install-recommends "
                           "curl && rm -rf /var/lib/apt/lists/*\n"),
    ("AptListsNotCleaned", "RUN --mount=type=cache,target=/var/lib/apt/lists apt-get update "
                           "&& apt-get install -y --no-install-recommends curl\n"),
    ("AptListsNotCleaned", "RUN apt-get install -y --no-install-recommends curl\n"),
    ("PipNoCacheDir", "RUN pip install --no-cache-dir flask\n"),
    ("PipNoCacheDir", "RUN --mount=type=cache,target=/root/.cache/pip pip install flask\n"),
    ("PipNoCacheDir", "ENV PIP_NO_CACHE_DIR=1\nRUN pip install flask\n"),
    ("PipNoCacheDir", "RUN PIP_NO_CACHE_DIR=1 pip install flask\n"),
    ("PipNoCacheDir", "RUN pip download flask && pip --version\n"),
    ("CdInsteadOfWorkdir", "WORKDIR /app\nRUN make\n"),
    ("CdInsteadOfWorkdir", "RUN make && cd /tmp && ls\n"),
    ("CdInsteadOfWorkdir", "RUN cd /app || exit 1\n"),
    ("CdInsteadOfWorkdir", "RUN (cd /app && make) && ls\n"),
    ("CurlPipeShell", "RUN curl -fsSLo /tmp/i.sh https://example.com/i && sh /tmp/i.sh\n"),
    ("CurlPipeShell", "RUN curl -s https://example.com/x.json | jq .\n"),
    ("CurlPipeShell", "RUN echo 'curl x | sh' > /notes\n"),
    ("CurlPipeShell", "RUN sh -c 'echo $(date)'\n"),
    ("CurlPipeShell", 'SHELL ["pwsh", "-c"]\nRUN iwr https://example.com/i | iex; curl x | sh\n'),
    ("CurlPipeShell", "RUN cat <<EOF > /notes\ncurl https://example.com/i | sh\nEOF\n"),
    ("ChownChmodAfterCopy", "COPY --chmod=755 run.sh /usr/local/bin/\n"
                            "RUN chmod +x /usr/local/bin/run.sh\n"),
    ("ChownChmodAfterCopy", "COPY run.sh /usr/local/bin/\nRUN chmod +x /usr/local/bin/other\n"),
    ("ChownChmodAfterCopy", "COPY --chown=app:app . /app\nRUN chown -R app:app /app\n"),
    ("ChownChmodAfterCopy", "RUN chmod 700 /root\n"),
    ("ChownChmodAfterCopy", "COPY a.txt /app/\nRUN chmod 600 $HOME/a.txt\n"),
]


@pytest.mark.parametrize(("rule", "body"), FIRES)
def test_rule_fires(rule: str, body: str) -> None:
    assert rule in _rules(body), _found(body)


@pytest.mark.parametrize(("rule", "body"), QUIET)
def test_rule_stays_quiet(rule: str, body: str) -> None:
    assert rule not in _rules(body), _found(body)


def test_every_rule_has_both_kinds_of_case() -> None:
    for rule in HYGIENE_RULES:
        assert any(r == rule.name for r, _ in FIRES), rule.name
        assert any(r == rule.name for r, _ in QUIET), rule.name


def test_finding_is_on_the_run_line_and_names_the_fix() -> None:
    text = ("FROM debian\nCOPY run.sh /usr/local/bin/\nRUN echo a \\\n  && chmod 755 "
            "/usr/local/bin/run.sh\n")
    report = lint_dockerfile(parse_text(text.encode(), "Dockerfile"))
    (warning,) = [w for w in report.warnings if w.rule == "ChownChmodAfterCopy"]
    assert warning.line == 3
    assert "COPY (line 2)" in warning.message and "COPY --chmod=755" in warning.message
    assert warning.url == "docs/lint.md#chownchmodaftercopy"


def test_a_script_the_grammar_does_not_know_gives_no_finding() -> None:
    assert _rules("RUN case $x in a) apt-get update;; esac\n") == set()


def test_check_skip_directive() -> None:
    body = "RUN apt-get update\nRUN pip install x\n"
    assert _rules(body) == {"AptUpdateWithoutInstall", "PipNoCacheDir"}
    assert _rules(body, "# check=skip=PipNoCacheDir\n") == {"AptUpdateWithoutInstall"}
    assert _rules(body, "# check=skip=PipNoCacheDir,AptUpdateWithoutInstall\n") == set()
    assert _rules(body, "# check=skip=all\n") == set()
    # A check= comment right above an instruction applies to it only.
    above = "RUN apt-get update\n# check=skip=PipNoCacheDir\nRUN pip install x\nRUN pip install y\n"
    assert _found(above) == [("AptUpdateWithoutInstall", 2), ("PipNoCacheDir", 5)]


def test_error_directive_and_waste_skips_are_in_the_report() -> None:
    text = "# check=error=true\nFROM debian\n# check=skip=FilesDeletedInLaterStep\nRUN true\n"
    report = lint_dockerfile(parse_text(text.encode(), "Dockerfile"))
    assert report.error and report.waste_off(4) and not report.waste_off(5)
    text = "# check=skip=FilesDeletedInLaterStep\nFROM debian\nRUN true\n"
    assert lint_dockerfile(parse_text(text.encode(), "Dockerfile")).waste_off(3)


def test_every_rule_is_documented() -> None:
    doc = (REPO / "docs" / "lint.md").read_text()
    headings = set(re.findall(r"^### `?(\w+)`?", doc, re.MULTILINE))
    for rule in (*HYGIENE_RULES, WASTE_RULE):
        assert rule.name in headings, rule.name
        assert rule.url == "docs/lint.md#" + rule.name.lower()

"""The lint a build and ``pybuild check`` run: BuildKit's rules
(``builder.dockerfile.linter``) and pybuild's layer-hygiene rules, in one report.

Every rule of ours has an id, a one-line description and an entry in docs/lint.md
(``url`` points there); ``# check=skip=<id>[,<id>]``, ``skip=all`` and
``error=true`` work on them as BuildKit's directive works on its own rules.
Changing what a rule finds means bumping ``findings.RULESET_VERSION``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec

from builder.dockerfile.parser import LintWarning
from builder.dockerfile.stages import Dockerfile
from builder.lint.findings import LintReport

if TYPE_CHECKING:
    from builder.lint.hygiene import HygieneFinding

__all__ = ["HYGIENE_RULES", "WASTE_RULE", "RuleInfo", "lint_dockerfile", "rule_info"]

_DOCS = "docs/lint.md#"


class RuleInfo(msgspec.Struct, frozen=True):
    name: str
    description: str

    @property
    def url(self) -> str:
        return _DOCS + self.name.lower()


HYGIENE_RULES = (
    RuleInfo("AptUpdateWithoutInstall",
             "apt-get update should run in the same RUN as the install that needs it"),
    RuleInfo("AptInstallRecommends", "apt-get install should use --no-install-recommends"),
    RuleInfo("AptListsNotCleaned",
             "A RUN that runs apt-get update should remove /var/lib/apt/lists"),
    RuleInfo("PipNoCacheDir",
             "pip install should use --no-cache-dir or a cache mount"),
    RuleInfo("CdInsteadOfWorkdir", "Use WORKDIR rather than a RUN that starts with cd"),
    RuleInfo("CurlPipeShell", "Do not pipe a downloaded script into a shell"),
    RuleInfo("ChownChmodAfterCopy",
             "Set modes and owners with COPY --chmod/--chown, not a later chmod/chown"),
)
WASTE_RULE = RuleInfo("FilesDeletedInLaterStep",
                      "Files a step creates should not be deleted or replaced by a later step")
_BY_NAME = {rule.name: rule for rule in (*HYGIENE_RULES, WASTE_RULE)}


def lint_dockerfile(df: Dockerfile, build_args: Mapping[str, str] | None = None,
                    hygiene: Sequence[HygieneFinding] | None = None) -> LintReport:
    """BuildKit's rules and ours over a parsed Dockerfile.  ``hygiene``: this file's
    ``hygiene_findings``, known already (found now otherwise, which imports Lark)."""
    from builder.dockerfile.linter import _comment_config, check_config, lint

    if hygiene is None:
        from builder.lint.hygiene import hygiene_findings

        hygiene = hygiene_findings(df)
    warnings = lint(df, build_args=build_args)
    base = check_config(df)
    comments = {c.line: c.comments for st in df.stages for c in st.commands}
    skipped_waste = set()
    for line, notes in comments.items():
        config = _comment_config(base, notes)
        if config.skip_all or WASTE_RULE.name in config.skip:
            skipped_waste.add(line)
    for finding in hygiene:
        config = _comment_config(base, comments.get(finding.line, []))
        if config.skip_all or finding.rule in config.skip:
            continue
        rule = _BY_NAME[finding.rule]
        warnings.append(LintWarning(rule.name, finding.line, finding.message, rule.url,
                                    rule.description))
    warnings.sort(key=lambda w: w.line)
    return LintReport(tuple(warnings), base.error, frozenset(skipped_waste),
                      base.skip_all or WASTE_RULE.name in base.skip)


def rule_info(name: str) -> RuleInfo:
    return _BY_NAME[name]

"""A Dockerfile's lint report as the store keeps it, readable without any rule.

This is all a cached rebuild imports of the lint (``builder.lint.gate``): the report
and its JSON.  ``RULESET_VERSION`` is part of the key reports are stored under:
bump it whenever a rule finds something different, so no build shows a stale
verdict.  Plain slotted classes, not dataclasses: this module is on the cached path,
where each dataclass costs about a millisecond to create at import.
"""

from __future__ import annotations

import json

from builder.dockerfile.parser import LintWarning

__all__ = ["RULESET_VERSION", "LintReport"]

RULESET_VERSION = 1


class LintReport:
    """A Dockerfile's findings, and what its ``# check=`` directive says about them."""

    __slots__ = ("error", "warnings", "waste_skip_all", "waste_skipped")

    def __init__(self, warnings: tuple[LintWarning, ...], error: bool = False,
                 waste_skipped: frozenset[int] = frozenset(),
                 waste_skip_all: bool = False) -> None:
        self.warnings = warnings
        self.error = error                  # check=error=true
        self.waste_skipped = waste_skipped  # step lines where the waste rule is off
        self.waste_skip_all = waste_skip_all

    def waste_off(self, line: int) -> bool:
        return self.waste_skip_all or line in self.waste_skipped

    def to_json(self) -> str:
        return json.dumps({
            "version": RULESET_VERSION, "error": self.error,
            "waste_skip_all": self.waste_skip_all, "waste_skipped": sorted(self.waste_skipped),
            "warnings": [[w.rule, w.line, w.message, w.url, w.description]
                         for w in self.warnings]})

    @staticmethod
    def from_json(text: str) -> LintReport | None:
        """None when the row is not one this version wrote (it is then linted again)."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != RULESET_VERSION:
                return None
            warnings = tuple(LintWarning(str(r), int(n), str(m), str(u), str(d))
                             for r, n, m, u, d in data["warnings"])
            return LintReport(warnings, bool(data["error"]),
                              frozenset(int(n) for n in data["waste_skipped"]),
                              bool(data["waste_skip_all"]))
        except (ValueError, TypeError, KeyError):
            return None

"""Lint in every build, for the price of a store lookup when nothing changed.

Before a build, ``lint_before_build`` looks the Dockerfile up in the store by
``sha256(rule set version, Dockerfile bytes, build args)``: a hit gives the stored
findings without parsing a rule or importing Lark, so a cached rebuild of an
unchanged Dockerfile costs one hash and one query.  A miss lints (BuildKit's rules
and ours) and stores the result; the findings that read RUN scripts with Lark are
kept by the Dockerfile's bytes alone, so another build-arg value does not load Lark.
``# check=error=true`` with findings stops the build there, before any step runs, as
BuildKit's ``lint violation found for rules``.

After a build, ``BuildLint.finish`` adds ``FilesDeletedInLaterStep`` (bytes a step
wrote that later steps delete or replace, measured from the layers by
``builder.explain.waste``), cached by image ID the same way, and prints the summary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from builder.dockerfile.parser import LintWarning
from builder.errors import DockerfileError, PybuildError
from builder.lint.findings import RULESET_VERSION, LintReport
from builder.store import records

if TYPE_CHECKING:   # a Protocol class costs import time on the cached path: types only
    from typing import Protocol

    from builder.store.store import Store

    class BuiltStep(Protocol):
        """What the summary needs of a built step (``engine.options.StepRecord``)."""

        @property
        def line(self) -> int: ...
        @property
        def layer(self) -> str | None: ...

__all__ = ["WASTE_THRESHOLD", "BuildLint", "check_build", "lint_before_build",
           "lint_key"]

# Less than this per step is noise (caches, logs, /etc/ld.so.cache rewritten by every
# package install): the finding is for the megabytes a pull ships for nothing.
WASTE_THRESHOLD = 1024 * 1024


def lint_key(text: bytes, build_args: Mapping[str, str]) -> str:
    digest = hashlib.sha256(f"pybuild-lint {RULESET_VERSION}\0{len(text)}\0".encode())
    digest.update(text)
    for name in sorted(build_args):   # values only inside the digest
        # surrogateescape: an argument that is not UTF-8 reaches Python that way.
        digest.update(f"\0{name}={build_args[name]}".encode("utf-8", "surrogateescape"))
    return "dockerfile:" + digest.hexdigest()


def _hygiene_key(text: bytes) -> str:
    """The key of the hygiene findings: the Dockerfile's bytes alone (no build args)."""
    return "hygiene:" + hashlib.sha256(
        f"pybuild-hygiene {RULESET_VERSION}\0".encode() + text).hexdigest()


class BuildLint:
    """One build's lint: its report before, its summary after."""

    __slots__ = ("key", "path", "report")

    def __init__(self, key: str, path: str, report: LintReport | None) -> None:
        self.key = key
        self.path = path
        self.report = report   # None: the Dockerfile does not parse (the build says why)

    def finish(self, store: Store, image_id: str, steps: Sequence[BuiltStep],
               say: Callable[[str], None]) -> None:
        """Print the summary: the Dockerfile's findings and the wasted-bytes finding."""
        if self.report is None:
            return
        warnings = [*self.report.warnings, *self._waste(store, image_id, steps)]
        warnings.sort(key=lambda w: w.line)
        _say_summary(self.path, warnings, say)

    def finish_failed(self, say: Callable[[str], None]) -> None:
        """The summary of a build that failed: the Dockerfile's findings only."""
        if self.report is not None:
            _say_summary(self.path, self.report.warnings, say)

    def _waste(self, store: Store, image_id: str,
               steps: Sequence[BuiltStep]) -> list[LintWarning]:
        assert self.report is not None
        key = "waste:" + hashlib.sha256(f"{self.key}\0{image_id}".encode()).hexdigest()
        raw = records.lint_result(store, key)
        cached = LintReport.from_json(raw) if raw is not None else None
        if cached is not None:
            return list(cached.warnings)
        try:
            found = _measure_waste(store, image_id, steps, self.report)
        except (OSError, PybuildError):  # a built image never fails for its summary
            return []
        records.put_lint_result(store, key, LintReport(tuple(found)).to_json())
        return found


def lint_before_build(store: Store, text: bytes | None, path: str,
                      build_args: Mapping[str, str], say: Callable[[str], None]) -> BuildLint:
    """The Dockerfile's lint report, from the store or made now; raises when
    ``# check=error=true`` and something was found (after printing the summary).
    ``text`` None: the Dockerfile cannot be read (the build says why): no lint."""
    if text is None:
        return BuildLint("", path, None)
    key = lint_key(text, build_args)
    raw = records.lint_result(store, key)
    report = LintReport.from_json(raw) if raw is not None else None
    if report is None:
        report = _lint_now(store, text, path, build_args)
        if report is not None:
            records.put_lint_result(store, key, report.to_json())
    if report is not None and report.error and report.warnings:
        _say_summary(path, report.warnings, say)
        rules = sorted({w.rule for w in report.warnings})
        raise DockerfileError("lint violation found for rules: " + ", ".join(rules), path)
    return BuildLint(key, path, report)


def _say_summary(path: str, warnings: Sequence[LintWarning],
                 say: Callable[[str], None]) -> None:
    if warnings:   # the formats are imported only when there is something to show
        from builder.lint.report import summary_lines

        for line in summary_lines(path, warnings):
            say(line)


def _lint_now(store: Store, text: bytes, path: str,
              build_args: Mapping[str, str]) -> LintReport | None:
    """Lint now.  The hygiene findings (the RUN scripts read with Lark) depend on the
    Dockerfile's bytes alone, not on the build args, so they are kept in the store by
    those bytes: a build whose only change is an argument's value does not build the
    shell parser again (about 0.1 s)."""
    import msgspec

    from builder.dockerfile import parse_text
    from builder.lint.hygiene import HygieneFinding, hygiene_findings
    from builder.lint.rules import lint_dockerfile

    key = _hygiene_key(text)
    raw = records.lint_result(store, key)
    try:
        found = None if raw is None else msgspec.json.decode(raw, type=list[HygieneFinding])
    except msgspec.DecodeError:   # not a row this version wrote: found again
        found = None
    try:
        dockerfile = parse_text(text, path)
        fresh = hygiene_findings(dockerfile) if found is None else None
        report = lint_dockerfile(dockerfile, build_args, found if fresh is None else fresh)
    except PybuildError:   # the build itself reports a Dockerfile that does not parse
        return None
    if fresh is not None:   # outside the try: a store error is not "does not parse"
        records.put_lint_result(store, key, msgspec.json.encode(fresh).decode())
    return report


def _measure_waste(store: Store, image_id: str, steps: Sequence[BuiltStep],
                   report: LintReport) -> list[LintWarning]:
    """Per step of this build in the image's chain: bytes later layers hide."""
    line_of = {step.layer: step.line for step in steps if step.layer}
    chain = store.chain(store.image_top_chain(image_id))
    first = next((i for i, r in enumerate(chain) if r.chain_id in line_of), None)
    if first is None:
        return []
    own = chain[first:]
    if any(record.packed for record in own):   # not extracted here: nothing to measure
        return []
    from builder.explain.waste import wasted_bytes
    from builder.lint.rules import WASTE_RULE

    out = []
    for record, wasted in zip(own, wasted_bytes([store.layer_dir(r.chain_id) for r in own]),
                              strict=True):
        line = line_of.get(record.chain_id)
        if line is None or wasted < WASTE_THRESHOLD or report.waste_off(line):
            continue
        out.append(LintWarning(
            WASTE_RULE.name, line,
            f"{_size(wasted)} this step writes are deleted or replaced by later steps, yet "
            "every pull still downloads them with this layer; create and remove such files "
            "in the same RUN (or use a cache or tmpfs mount, or a build stage)",
            WASTE_RULE.url, WASTE_RULE.description))
    return out


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def check_build(text: bytes, path: str, build_args: Mapping[str, str]) -> tuple[str, bool]:
    """``pybuild build --check``: BuildKit's lint text, and whether anything was found.
    A Dockerfile that does not parse raises its one-line error."""
    from builder.dockerfile import parse_text
    from builder.lint.report import check_text
    from builder.lint.rules import lint_dockerfile

    report = lint_dockerfile(parse_text(text, path), build_args)
    return check_text(path, text.decode(errors="replace"), report.warnings), bool(
        report.warnings)

"""Reason codes: made from two recorded input lists, kept as data, rendered by code."""

from __future__ import annotations

from builder.cache.difference import differences
from builder.cache.keys import recorded_inputs
from builder.cache.reasons import Reason, ReasonCode, from_records, summary_text, to_records
from builder.explain.steps import StepRecord

PARENT = "sha256:" + "1" * 64
OTHER_PARENT = "sha256:" + "2" * 64


def _codes(reasons: list[Reason]) -> list[str]:
    return [reason.code.value for reason in reasons]


def _copy(files: dict[str, str], parent: str = PARENT) -> list[tuple[str, str]]:
    return [("parent", parent), ("instruction", "COPY"), ("dest", "/app/"),
            *(("file", f"{path}={entry}") for path, entry in files.items()),
            ("content", "sha256:" + str(hash(tuple(files.items())) % 10**8).zfill(64))]


def test_files_added_changed_removed_and_mode_only() -> None:
    old = _copy({"a": "file 644 sha256:aa", "b": "file 644 sha256:bb",
                 "c": "file 644 sha256:cc"})
    new = _copy({"a": "file 755 sha256:aa", "b": "file 644 sha256:b2",
                 "d": "file 644 sha256:dd"})
    reasons = differences(old, new)
    assert _codes(reasons) == ["mode-changed", "file-changed", "file-added", "file-removed"]
    assert reasons[0].params == {"path": "a", "old": "644", "new": "755"}
    assert summary_text(reasons) == ("cache miss: file a mode changed: 644 -> 755; file b "
                                     "changed; file d added (and 1 more)")


def test_a_build_arg_is_named_never_its_value() -> None:
    old = recorded_inputs([("parent", PARENT), ("env", "TOKEN=one")], {"TOKEN": "one"})
    new_clear = [("parent", PARENT), ("env", "TOKEN=two-secret")]
    new = recorded_inputs(new_clear, {"TOKEN": "two-secret"})
    reasons = differences(old, new, new_clear)
    assert reasons == [Reason(ReasonCode.ARG_CHANGED, name="TOKEN", change="changed")]
    assert "two-secret" not in repr(to_records(reasons)) + summary_text(reasons)


def test_an_unchanged_arg_under_a_new_parent_is_not_named() -> None:
    """Digests are salted with the parent key: the clear value recomputes the old one."""
    old = recorded_inputs([("parent", PARENT), ("env", "FLAVOR=plain")], {"FLAVOR": "plain"})
    clear = [("parent", OTHER_PARENT), ("env", "FLAVOR=plain")]
    new = recorded_inputs(clear, {"FLAVOR": "plain"})
    assert old != new
    assert differences(old, new, clear) == []
    changed = [("parent", OTHER_PARENT), ("env", "FLAVOR=hot")]
    assert _codes(differences(old, recorded_inputs(changed, {"FLAVOR": "hot"}), changed)) \
        == ["arg-changed"]


def test_env_shows_old_and_new_and_the_instruction_its_text() -> None:
    old = [("parent", PARENT), ("instruction", "RUN"), ("argv", '["sh", "-c", "a"]'),
           ("env", "HOME=/a"), ("workdir", "/srv")]
    new = [("parent", PARENT), ("instruction", "RUN"), ("argv", '["sh", "-c", "b"]'),
           ("env", "HOME=/b"), ("workdir", "/srv")]
    reasons = differences(old, new)
    assert _codes(reasons) == ["instruction-changed", "env-changed"]
    assert reasons[1].text() == "env HOME: '/a' -> '/b'"


def test_only_a_cache_mount_changed() -> None:
    old = [("parent", PARENT), ("mount", "cache /root/.cache id=/root/.cache")]
    new = [("parent", PARENT), ("mount", "cache /root/.cache id=pip")]
    assert differences(old, new) == [Reason(ReasonCode.CACHE_MOUNT_ONLY,
                                            target="/root/.cache")]


def test_a_large_difference_is_counted_not_listed() -> None:
    old = _copy({f"f{i}": "file 644 sha256:aa" for i in range(50)})
    new = _copy({f"f{i}": "file 644 sha256:bb" for i in range(50)})
    reasons = differences(old, new)
    assert len(reasons) == 21 and reasons[-1] == Reason(ReasonCode.MORE, count="30")
    assert summary_text(reasons).endswith("(and 47 more)")


def test_reasons_round_trip_and_an_unknown_code_stays_data() -> None:
    reasons = [Reason(ReasonCode.FILE_CHANGED, path="x"), Reason(ReasonCode.NO_CACHE)]
    assert from_records(to_records(reasons)) == reasons
    assert from_records([{"code": "from-the-future", "params": {}}]) == [
        Reason(ReasonCode.NOTE, text="from-the-future")]
    assert from_records("not a list") == [] and from_records([7, {"code": 3}]) == []


def test_a_record_from_an_older_pybuild_reads_as_the_same_type() -> None:
    old = {"stage": "s", "index": 2, "instruction": "RUN x", "line": 3, "layer": "sha256:ab",
           "key": "k", "cached": False, "added": 4, "modified": 1, "deleted": 0, "size": 9,
           "seconds": 1.5, "created": "", "note": "cache miss: file a changed"}
    step = StepRecord.from_record(old)
    assert (step.changes.added, step.changes.modified, step.changes.size) == (4, 1, 9)
    assert step.reasons == [Reason(ReasonCode.NOTE, text="cache miss: file a changed")]
    assert step.note == "cache miss: file a changed"
    assert StepRecord.from_record({"note": "cache hit"}).reasons == [
        Reason(ReasonCode.CACHE_HIT)]
    again = StepRecord.from_record(step.to_record())
    assert again == step

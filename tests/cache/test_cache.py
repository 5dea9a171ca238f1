"""The instruction-hash cache: hits, misses explained, portability, reproducible images."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import fails_in_one_line, run_cli

from builder.cache import CacheStore
from builder.cache.reasons import ReasonCode
from builder.context.checksum import checksum_sources
from builder.explain.steps import StepRecord

pytestmark = [pytest.mark.root, pytest.mark.overlay]

DOCKERFILE = """\
FROM busybox
ARG FLAVOR=plain
ENV GREETING=hello
COPY app/ /app/
RUN echo "$GREETING $FLAVOR" > /app/out.txt
CMD ["cat", "/app/out.txt"]
"""


@pytest.fixture
def project(tmp_path: Path, busybox_tar: Path) -> tuple[Path, Path]:
    root = tmp_path / "store"
    _import(root, busybox_tar)
    context = tmp_path / "ctx"
    (context / "app").mkdir(parents=True)
    (context / "app" / "main.sh").write_text("echo main\n")
    (context / "Dockerfile").write_text(DOCKERFILE)
    return root, context


def _import(root: Path, tarball: Path) -> None:
    """Import busybox as a registry would hand it out: the same image ID on every machine."""
    saved = dict(os.environ)
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    try:
        run_cli("import", str(tarball), "busybox", root=root)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _build(root: Path, context: Path, *extra: str, env: dict | None = None) -> str:
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        result = run_cli("-q", "-t", "app", *extra, str(context), root=root)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return result.stdout.decode().strip()


def _steps(root: Path) -> list[StepRecord]:
    """The build record of the image "app"."""
    from builder.explain.records import load_build
    from builder.store import Store

    store = Store(root)
    steps = load_build(store, store.resolve_image("app"))
    store.close()
    assert steps is not None
    return steps


def _notes(root: Path) -> dict[str, str]:
    return {s.instruction.split()[0]: s.note for s in _steps(root)}


def _codes(root: Path) -> dict[str, list[ReasonCode]]:
    return {s.instruction.split()[0]: [r.code for r in s.reasons] for s in _steps(root)}


def test_unchanged_rebuild_hits_every_step_and_gives_the_same_image(project) -> None:
    root, context = project
    first = _build(root, context)
    assert _notes(root)["RUN"] == "cache miss: not built before"
    assert _build(root, context) == first
    notes = _notes(root)
    assert notes["COPY"] == notes["RUN"] == "cache hit"
    explain = run_cli("explain", "app", root=root).stdout.decode()
    assert "hit" in explain


def test_a_changed_file_is_named_as_the_reason(project) -> None:
    root, context = project
    _build(root, context)
    (context / "app" / "main.sh").write_text("echo changed\n")
    _build(root, context)
    notes = _notes(root)
    assert notes["COPY"] == "cache miss: file app/main.sh changed"
    assert notes["RUN"] == ("cache miss: an earlier step ran (stage-0:3), so this one "
                            "builds on a new result")
    codes = _codes(root)
    assert codes["COPY"] == [ReasonCode.FILE_CHANGED]
    assert codes["RUN"] == [ReasonCode.PARENT_MISSED]


def test_a_changed_build_arg_is_named_as_the_reason(project) -> None:
    root, context = project
    _build(root, context)
    _build(root, context, "--build-arg", "FLAVOR=spicy")
    # Build-arg values are recorded as digests only (round 2, point 8): no values.
    assert _notes(root)["RUN"] == "cache miss: arg FLAVOR changed"
    assert _codes(root)["RUN"] == [ReasonCode.ARG_CHANGED]
    assert _notes(root)["COPY"] == "cache hit"


def test_no_cache_says_so(project) -> None:
    root, context = project
    _build(root, context)
    _build(root, context, "--no-cache")
    assert _notes(root)["RUN"] == "cache miss: --no-cache"


def test_reproducible_builds_in_two_fresh_stores_give_one_digest(tmp_path, busybox_tar) -> None:
    context = tmp_path / "ctx"
    (context / "app").mkdir(parents=True)
    (context / "app" / "main.sh").write_text("echo main\n")
    (context / "Dockerfile").write_text(DOCKERFILE)
    digests = []
    for name in ("one", "two"):
        root = tmp_path / name
        _import(root, busybox_tar)
        digests.append(_build(root, context, env={"SOURCE_DATE_EPOCH": "1700000000"}))
        archive = tmp_path / f"{name}.tar"
        run_cli("save", "-o", str(archive), "app", root=root)
        digests.append(archive.read_bytes())
    assert digests[0] == digests[2]  # image ID
    assert digests[1] == digests[3]  # the whole archive, byte for byte


def test_cache_exported_on_one_machine_hits_on_another(project, tmp_path, busybox_tar) -> None:
    root, context = project
    cache_dir = tmp_path / "ci-cache"
    first = _build(root, context, "--cache-to", f"type=local,dest={cache_dir},mode=max")
    index = json.loads((cache_dir / "index.json").read_text())
    assert index["manifests"][0]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    fresh = tmp_path / "fresh-store"  # another machine: nothing in common but the cache dir
    _import(fresh, busybox_tar)
    assert _build(fresh, context, "--cache-from", f"type=local,src={cache_dir}") == first
    notes = _notes(fresh)
    assert notes["COPY"] == notes["RUN"] == "cache hit"


def test_a_noop_recheck_of_a_big_context_reads_no_file(store, tmp_path) -> None:
    context = tmp_path / "big"
    for i in range(2000):
        sub = context / f"d{i % 40}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}").write_text(f"content {i}\n")
    cache = CacheStore(store)
    first = checksum_sources([(".", str(context))], cache=cache)
    cache.flush_stats()
    assert first.read_bytes > 0
    again = checksum_sources([(".", str(context))], cache=CacheStore(store))
    assert again.read_bytes == 0 and again.digest == first.digest
    (context / "d1" / "f1").write_text("changed\n")
    third = checksum_sources([(".", str(context))], cache=CacheStore(store))
    assert third.read_bytes == len("changed\n") and third.digest != first.digest


def test_explain_reports_wasted_space(tmp_path: Path, busybox_tar: Path) -> None:
    root = tmp_path / "store"
    _import(root, busybox_tar)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox\nRUN head -c 300000 /dev/zero > /big && echo keep > /keep\n"
        "RUN rm /big\n")
    _build(root, context)
    explain = run_cli("explain", "app", root=root).stdout.decode()
    assert "wasted: 300.0kB of it is deleted or overwritten by later steps" in explain
    assert "300.0kB shipped in layers but hidden by later steps" in explain


def test_no_cache_filter_skips_the_cache_of_one_stage(tmp_path: Path, busybox_tar: Path) -> None:
    root = tmp_path / "store"
    _import(root, busybox_tar)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox AS deps\nRUN head -c 16 /dev/urandom > /deps\n"
        "FROM busybox\nCOPY --from=deps /deps /deps\nRUN echo final > /final\n")
    _build(root, context)
    _build(root, context, "--no-cache-filter", "deps")
    notes = {(s.stage, s.index): s.note for s in _steps(root)}
    assert notes[("deps", 1)] == "cache miss: --no-cache-filter deps"
    # The rebuilt stage made new content, so COPY --from misses and says why.
    assert notes[("stage-1", 1)].startswith("cache miss: the --from source is another "
                                            "result: sha256:")


def test_an_excluded_file_is_not_part_of_the_copy_key(project) -> None:
    """COPY --exclude leaves the entries it excludes out of the cache key as well as
    the copy: BuildKit checksums a copy's source with its ExcludePatterns
    (moby/buildkit solver/llbsolver/ops/file.go, cache/contenthash ChecksumOpts), so
    changing an excluded file reuses the step."""
    root, context = project
    (context / "app" / "debug.log").write_text("one\n")
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(DOCKERFILE.replace("COPY app/ /app/",
                                             "COPY --exclude=*.log app/ /app/"))
    first = _build(root, context)
    (context / "app" / "debug.log").write_text("two\n")
    assert _build(root, context) == first
    (context / "app" / "main.sh").write_text("echo changed\n")
    assert _build(root, context) != first


def test_a_second_cache_to_is_refused_not_dropped(tmp_path: Path) -> None:
    """buildx exports to every --cache-to; pybuild to one, and says so (docs/ci-cache.md)."""
    result = run_cli("build", "--cache-to", f"type=local,dest={tmp_path / 'a'}", "--cache-to",
                     f"type=local,dest={tmp_path / 'b'}", str(tmp_path), root=tmp_path / "s",
                     check=False)
    fails_in_one_line(result, "--cache-to given 2 times")

"""Parse speed of the Dockerfile front end, and how the off-the-shelf options compare.

    /work/venv/bin/python benchmarks/bench_parse.py [N]

Generates an N-instruction Dockerfile (default 10,000; several stages, every
instruction kind, continuations, comments, heredocs, JSON forms) and prints the
best of five timings for each step. It then checks two alternatives against
BuildKit's parser vectors: ``dockerfile-parse`` (PyPI) and a minimal ``lark``
grammar that only splits lines into instructions.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VECTORS = ROOT / "testdata" / "buildkit" / "parser"

BLOCK = [
    "ARG VERSION=1.{i}",
    "FROM --platform=$BUILDPLATFORM golang:1.22 AS build{i}",
    "# build step {i}",
    "ENV GOPATH=/go PATH=/go/bin:$PATH CGO_ENABLED=0",
    "LABEL org.opencontainers.image.version=\"$VERSION\" maintainer=\"me <me@x>\"",
    "WORKDIR /src/{i}",
    "COPY --chown=1000:1000 --link go.mod go.sum ./",
    "RUN --mount=type=cache,target=/root/.cache/go-build,id=go{i} \\\n"
    "    go mod download && \\\n    go build -o /out/app{i} ./cmd/app",
    'RUN ["/bin/sh", "-c", "echo {i}"]',
    "RUN <<EOF\nset -e\necho building {i}\nEOF",
    "EXPOSE 80{i} 443/tcp",
    "USER 1000:1000",
    "VOLUME [\"/data{i}\"]",
    "HEALTHCHECK --interval=30s --timeout=3s CMD curl -f http://localhost/ || exit 1",
    'ENTRYPOINT ["/out/app{i}"]',
    "CMD [\"--help\"]",
]


def generate(n: int) -> str:
    lines: list[str] = []
    count = i = 0
    while count < n:
        for template in BLOCK:
            if count >= n:
                break
            text = template.format(i=i)
            lines.append(text)
            if not text.startswith("#"):
                count += 1
        i += 1
    lines.append("FROM scratch")
    lines.append("COPY --from=build0 /out/app0 /app")
    return "\n".join(lines) + "\n"


def best(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_ours(text: str, n: int) -> None:
    from builder.dockerfile import Platform, debug_parse, lint, parse_text, plan_build
    from builder.dockerfile.parser import parse

    df = parse_text(text)
    rows = [
        ("parse (text -> nodes)", lambda: parse(text)),
        ("parse_text (-> typed stages)", lambda: parse_text(text)),
        ("debug_parse (BuildKit dump)", lambda: debug_parse(text)),
        ("plan_build (default target)", lambda: plan_build(df, build_platform=Platform())),
        ("lint (all rules)", lambda: lint(df)),
    ]
    print(f"pybuild, {n} instructions, {len(text):,} bytes, {len(df.stages)} stages:")
    for name, fn in rows:
        print(f"  {name:32s} {best(fn) * 1000:8.1f} ms")


def vector_files() -> list[tuple[str, bytes, str]]:
    out = []
    for case in sorted((VECTORS / "testfiles").iterdir()):
        data = (case / "Dockerfile").read_bytes()
        out.append((case.name, data, (case / "result").read_text("utf-8")))
    return out


def expected_instructions(result: str) -> list[str]:
    return [line[1:].split(" ", 1)[0].rstrip(")") for line in result.splitlines()]


def bench_dockerfile_parse(text: str) -> None:
    from dockerfile_parse import DockerfileParser

    def run(data: str) -> list[dict]:
        parser = DockerfileParser(fileobj=io.BytesIO(data.encode()))
        return parser.structure

    elapsed = best(lambda: run(text), 3)
    same_split = 0
    for _name, data, result in vector_files():
        try:
            got = [i["instruction"].lower() for i in run(data.decode("utf-8", "replace"))]
        except Exception:  # a crash counts as a mismatch
            got = []
        if got == expected_instructions(result):
            same_split += 1
    negative = 0
    for case in sorted((VECTORS / "testfiles-negative").iterdir()):
        try:
            run((case / "Dockerfile").read_text())
        except Exception:
            negative += 1
    print("dockerfile-parse 2.x:")
    print(f"  structure of the generated file  {elapsed * 1000:8.1f} ms")
    print(f"  testfiles split into the same instructions: {same_split}/33 (arguments not even")
    print("  comparable: it keeps raw text, no JSON/shell-form, flag or ENV-pair split)")
    print(f"  testfiles-negative rejected: {negative}/4")


LARK_GRAMMAR = r"""
start: (_NL | instruction)*
instruction: KEYWORD REST? _NL?
KEYWORD: /[A-Za-z]+/
REST: /[ \t]+(\\[ \t]*\n|[^\n])*/
COMMENT: /[ \t]*#[^\n]*/
_NL: /\r?\n/
%ignore COMMENT
"""


def bench_lark(text: str) -> None:
    from lark import Lark

    parser = Lark(LARK_GRAMMAR, parser="lalr")
    elapsed = best(lambda: parser.parse(text), 3)
    same_split = 0
    for _name, data, result in vector_files():
        try:
            tree = parser.parse(data.decode("utf-8", "replace"))
            got = [str(i.children[0]).lower() for i in tree.children]
        except Exception:
            got = []
        if got == expected_instructions(result):
            same_split += 1
    print("lark 1.x (LALR, a line-splitting grammar only: no arguments, directives, heredocs):")
    print(f"  parse of the generated file      {elapsed * 1000:8.1f} ms")
    print(f"  testfiles split into the same instructions: {same_split}/33")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    text = generate(n)
    bench_ours(text, n)
    try:
        bench_dockerfile_parse(text)
    except ImportError:
        print("dockerfile-parse: not installed")
    try:
        bench_lark(text)
    except ImportError:
        print("lark: not installed")


if __name__ == "__main__":
    main()

"""Issue 15 point 10: ``dockerfile-parse`` is a test oracle only, never a product import.

Our parser (``builder.dockerfile.parser``, itself checked against BuildKit's own test
vectors) is compared with dockerfile-parse on every Dockerfile under testdata/, where
their models overlap: the instruction keyword, its value (``original`` without the
keyword) and its first and last line.  They do not overlap on heredocs, comment or
blank lines inside a continued instruction, a file ending in a continuation, a
continuation with blanks after the escape, a line ending in an escaped backslash,
or an ``# escape=`` directive
(dockerfile-parse knows none of these as BuildKit does); such files are left out, by
those structural tests only, never by their result.
"""

from __future__ import annotations

import ast
import io
import tomllib
from pathlib import Path

import dockerfile_parse  # the test extra's (pyproject.toml), never the product's
from helpers import REPO, TESTDATA

from builder.dockerfile.parser import Node, parse


def _dockerfiles() -> list[Path]:
    return sorted(p for p in TESTDATA.rglob("*") if p.is_file()
                  and ("dockerfile" in p.name.lower() or "containerfile" in p.name.lower()))


def _outside_overlap(text: str, nodes: list[Node]) -> str:
    """Why the two models differ on this file ("" when they should agree)."""
    lines = text.split("\n")
    if any(line.lower().replace(" ", "").startswith("#escape=") for line in lines[:5]):
        return "escape directive"
    for node in nodes:
        if node.heredocs or "<<" in node.original:
            return "heredoc"
        body = lines[node.start_line - 1:node.end_line]
        if any(not line.strip() or line.lstrip().startswith("#") for line in body[1:]):
            return "comment or blank line inside an instruction"
        if any(line.rstrip("\r") != line.rstrip() and line.rstrip().endswith("\\")
               for line in body):
            return "blanks after a continuation"
        if any(line.rstrip().endswith("\\\\") for line in body):
            return "a line ending in an escaped backslash"
    if nodes and lines[nodes[-1].end_line - 1].rstrip().endswith("\\"):
        return "continuation at end of file"
    return ""


def test_parser_agrees_with_dockerfile_parse_where_models_overlap() -> None:
    compared, left_out = 0, 0
    for path in _dockerfiles():
        data = path.read_bytes()
        try:
            nodes = parse(data, str(path)).nodes
        except Exception:   # a vector BuildKit rejects: dockerfile-parse has no errors
            left_out += 1
            continue
        if _outside_overlap(data.decode(errors="replace"), nodes):
            left_out += 1
            continue
        theirs = [s for s in dockerfile_parse.DockerfileParser(fileobj=io.BytesIO(data))
                  .structure if s["instruction"] != "COMMENT"]
        ours = [(n.value.upper(), (n.original.split(None, 1)[1:] or [""])[0].rstrip(),
                 n.start_line, n.end_line) for n in nodes]
        expected = [(s["instruction"], s["value"].rstrip(), s["startline"] + 1,
                     s["endline"] + 1) for s in theirs]
        assert ours == expected, path
        compared += 1
    assert compared >= 50, (compared, left_out)   # 54 of 79 files when written


def _imported_top_modules() -> set[str]:
    names: set[str] = set()
    for path in (REPO / "builder").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


# A distribution's name on PyPI -> the module it is imported as.
_MODULE_OF = {"dockerfile-parse": "dockerfile_parse", "pyyaml": "yaml", "lark": "lark",
              "zstandard": "zstandard"}


def test_every_runtime_dependency_is_imported_by_the_product() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    runtime = [d.split("~")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
               for d in config["project"]["dependencies"]]
    imported = _imported_top_modules()
    unused = [d for d in runtime if _MODULE_OF.get(d, d.replace("-", "_")) not in imported]
    assert not unused, f"runtime dependencies builder/ never imports: {unused}"
    test_extra = " ".join(config["project"]["optional-dependencies"]["test"])
    assert "dockerfile-parse" in test_extra and "dockerfile_parse" not in imported

"""Issue 15 point 7: ``--format`` and ``--no-trunc`` of ``images``, ``history``, ``inspect``.

The template subset (``builder.cli.gotemplate``) against what Go's text/template and
docker's formatter print (expected strings taken from docker 28's own output on the
same data, see tests/test_cli_formats_docker.py for the live comparison); docker's words
for sizes, durations and truncation; Go's tabwriter; untrusted values never reaching
the terminal raw; one-line errors; and the command line on a hostile loaded image.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import run_cli
from security.oracle import TarMaker

from builder.cli import formats
from builder.cli.gofuncs import GoMap, Row, TemplateError, go_float, go_json, go_print

DOC = {"Id": "sha256:" + "ab" * 32, "RepoTags": ["fmt:1", "other/fmt:latest"],
       "Created": "2026-12-03T13:21:21.573582317Z", "Size": 2145280,
       "Config": {"Env": ["PATH=/bin", "A=1", "B=two words"], "Cmd": ["sh", "-c", "echo hi"],
                  "Labels": {"other": "x y", "evil": "a\\033b", "com.example.z": "1"},
                  "ArgsEscaped": True},
       "RootFS": {"Type": "layers", "Layers": ["sha256:aa", "sha256:bb"]}}
CONFIG = {"history": [{"comment": "first"}, {"comment": "buildkit.dockerfile.v0"}]}


def _inspect(template: str, doc: dict[str, object] = DOC) -> str:
    return formats.render_inspect(template, doc, CONFIG)


@pytest.mark.parametrize(("template", "expected"), [
    ("{{.Id}}", "sha256:" + "ab" * 32),
    ("{{.Config.Env}}", "[PATH=/bin A=1 B=two words]"),
    ("{{index .RepoTags 0}}", "fmt:1"),
    ("{{json .Config}}", '{"Env":["PATH=/bin","A=1","B=two words"],"Cmd":["sh","-c","echo hi"],'
     '"Labels":{"com.example.z":"1","evil":"a\\\\033b","other":"x y"},"ArgsEscaped":true}'),
    ("{{.Config.Labels}}", "map[com.example.z:1 evil:a\\033b other:x y]"),
    ("{{json .Config.Labels}}", '{"com.example.z":"1","evil":"a\\\\033b","other":"x y"}'),
    ("{{json .RootFS}}", '{"Type":"layers","Layers":["sha256:aa","sha256:bb"]}'),
    ("{{.RootFS}}", "{layers [sha256:aa sha256:bb]}"),
    ("{{.Config.Labels.other}}", "x y"),
    ("{{range .Config.Env}}{{println .}}{{end}}", "PATH=/bin\nA=1\nB=two words\n"),
    ("{{join .Config.Cmd \",\"}}|{{upper \"a\"}}{{lower \"B\"}}", "sh,-c,echo hi|Ab"),
    ("{{if .Config.Entrypoint}}e{{else if .Config.Cmd}}c{{else}}n{{end}}", "c"),
    ("{{with .RootFS}}{{.Type}}{{end}}{{with .Config.Shell}}x{{else}}none{{end}}",
     "layersnone"),
    ("{{.Config.WorkingDir}}|{{.Config.Volumes}}|{{json .Config.Volumes}}|"
     "{{.Config.Healthcheck}}|{{.Config.Entrypoint}}|{{json .Config.Entrypoint}}",
     "|map[]|null|<nil>|[]|null"),  # docker's zero values for what the config leaves out
    ("{{.Comment}}|{{.Parent}}|{{.RepoDigests}}|{{.Variant}}", "buildkit.dockerfile.v0||[]|"),
    ("{{printf \"%-8s|%5d|%q\" .Config.Cmd 42 \"x\"}}", '[sh -c echo hi]|   42|"x"'),
    ("{{.Size}} {{len .RepoTags}} {{.Config.ArgsEscaped}}", "2145280 2 true"),
    ("{{- \"a\" }}  {{- \"b\" -}}  c", "abc"),
    ("{{/* a comment */}}{{$.Id | printf \"%.10s\"}}", "sha256:aba"),
    ("{{title \"hello wide-world\"}} {{split \"a:b\" \":\"}} {{pad \"x\" 1 2}}|"
     "{{truncate \"abcdef\" 3}}", "Hello Wide-World [a b]  x  |abc"),
    ("{{eq .Size 2145280}} {{ne 1 2}} {{not true}} {{and 1 0}} {{or 0 \"y\"}}",
     "true true false 0 y"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
     "com.example.z=1;evil=a\\033b;other=x y;"),
    ("{{range $i, $t := .RepoTags}}{{$i}}:{{$t}} {{end}}{{$id := .Id}}{{printf \"%.8s\" $id}}",
     "0:fmt:1 1:other/fmt:latest sha256:a"),
    ("{{with $c := .Config}}{{index $c.Env 1}}{{end}}", "A=1"),
    ("\\t", "\t"),  # the flag's \t and \n are a tab and a newline, as docker's
])
def test_inspect_templates_print_what_docker_prints(template: str, expected: str) -> None:
    assert _inspect(template) == expected + "\n"


def test_inspect_format_json_is_the_usual_array() -> None:
    assert json.loads(_inspect("json")) == [DOC] == json.loads(_inspect(""))
    rows = _history_rows()  # once: "N minutes ago" is computed when a row is made
    assert formats.render_rows("", formats.HISTORY, rows) == \
        formats.render_rows("table", formats.HISTORY, rows)


@pytest.mark.parametrize(("template", "message"), [
    ("{{.Nope}}", 'map has no entry for key "Nope" (in .Nope)'),
    ("{{.Config.Nope.X}}", 'no entry for key "Nope" (in .Config.Nope)'),
    ("{{.Size.X}}", "can't evaluate field X (in .Size.X) in type int"),
    ("{{index .RepoTags 5}}", "index out of range: 5"),
    ("{{nope .Id}}", 'function "nope" not defined'),
    ("{{.Id", "unclosed action"),
    ("{{if .Id}}x", "missing {{end}}"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{$x := .Id}}{{$x = 1}}", "assigning to a variable is not supported"),
    ("{{range $a, $b, $c := .RepoTags}}{{end}}", "bad variable declaration"),
    ("{{$nope}}", "undefined variable: $nope"),
    ("{{.Id 1}}", "can't give argument to non-function .Id"),
    ("{{upper .RepoTags}}", "expected string; got slice"),
    ("{{join .RepoTags}}", "wrong number of args"),
    ("{{\"\\q\"}}", "unknown escape sequence"),
    ("{{\"\\U00110000\"}}", "unknown escape sequence"),
    ("{{" + "(" * 3000 + "1" + ")" * 3000 + "}}", "nested too deeply"),
    ("{{if 1}}" * 3000 + "{{end}}" * 3000, "nested too deeply"),
])
def test_a_bad_template_is_one_line_naming_the_flag_and_field(template: str,
                                                               message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        _inspect(template)
    text = str(caught.value)
    assert text.startswith("--format: ") and message in text and "\n" not in text, text


def _history_rows() -> list[Row]:
    entries = [{"created": "2026-12-03T13:16:09Z", "created_by": "pybuild import",
                "comment": "Imported from busybox.tar"},
               {"created": "2026-12-03T13:21:21.573582317Z",
                "created_by": "RUN /bin/sh -c echo 'a long command that goes well beyond "
                              "forty-five characters'", "comment": "buildkit.dockerfile.v0"}]
    return [formats.history_row(entry, image, size, no_trunc=False) for entry, image, size
            in zip(entries, ["<missing>", "sha256:5e1e4837dbc878db6e212a5e1138ab831c"],
                   [1982529, 76], strict=True)][::-1]


def test_history_rows_table_and_json_as_docker() -> None:
    rows = _history_rows()
    table = formats.render_rows("table {{.ID}}\\t{{.CreatedBy}}\\t{{.Size}}\\t{{.Comment}}",
                                formats.HISTORY, rows)
    # docker 28's own output for the same entries (tabwriter: minwidth 10, padding 3).
    assert table.splitlines() == [
        "IMAGE          CREATED BY                                      SIZE      COMMENT",
        "5e1e4837dbc8   RUN /bin/sh -c echo 'a long command that goe…   76B       "
        "buildkit.dockerfile.v0",
        "<missing>      pybuild import                                  1.98MB    "
        "Imported from busybox.tar"]
    lines = formats.render_rows("json", formats.HISTORY, rows).splitlines()
    first = json.loads(lines[0])
    assert sorted(first) == ["Comment", "CreatedAt", "CreatedBy", "CreatedSince", "ID", "Size"]
    assert first["CreatedAt"].endswith("Z") or first["CreatedAt"][-6] in "+-"
    assert '"ID":"\\u003cmissing\\u003e"' in lines[1]  # MarshalJSON escapes HTML, as Go's
    whole = formats.history_row({"created_by": "x\ty" * 30}, "sha256:" + "c" * 64, 0,
                                no_trunc=True)
    assert whole.fields["CreatedBy"] == "x y" * 30 and whole.fields["ID"] == "sha256:" + "c" * 64


def test_image_rows_one_per_repository_and_tag() -> None:
    rows = formats.image_rows("sha256:" + "5e" * 32, ["fmt:1", "other/fmt:latest",
                                                      "pulled@sha256:" + "0" * 64],
                              "2026-12-03T13:21:21Z", 2145280, no_trunc=False)
    assert [(r.fields["Repository"], r.fields["Tag"], r.fields["Digest"]) for r in rows] == [
        ("fmt", "1", "<none>"), ("other/fmt", "latest", "<none>"), ("pulled", "<none>", "")]
    fields = rows[0].fields
    assert (fields["ID"], fields["Size"], fields["VirtualSize"], fields["Containers"]) == (
        "5e5e5e5e5e5e", "2.15MB", "2.145MB", "N/A")
    assert formats.image_rows("sha256:" + "5e" * 32, [], "", 0, no_trunc=True)[0].fields[
        "Repository"] == "<none>"
    out = formats.render_rows("table", formats.IMAGES, rows[:1])
    assert out.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED",
                                           "SIZE"]
    with pytest.raises(TemplateError, match=r"--format: can't evaluate field Nope"):
        formats.render_rows("{{.Nope}}", formats.IMAGES, rows)
    # A header's own error prints what came before it, as docker's.
    assert formats.render_rows("table {{json .}}", formats.IMAGES, rows[:1]).startswith("\n{")


@pytest.mark.parametrize(("lines", "expected"), [
    (["a\tbb\tc\n", "aaaaaaaaaaaa\tb\n"],
     ["a              bb        c", "aaaaaaaaaaaa   b"]),
    (["x\ty\n", "no tabs\n", "longer cell\tz\n"],  # a line without the column ends a block
     ["x         y", "no tabs", "longer cell   z"]),
    (["", "tail"], ["tail"]),
])
def test_tabwriter_is_gos(lines: list[str], expected: list[str]) -> None:
    assert "".join(formats.tabwrite(lines)).splitlines() == expected


def test_docker_words_for_sizes_times_and_ids() -> None:
    assert [formats.human_size(n) for n in (0, 76, 999, 1000, 999_999, 1_982_529,
                                            2_145_280_000)] == [
        "0B", "76B", "999B", "1kB", "1e+03kB", "1.98MB", "2.15GB"]  # %.3g, as go-units
    assert formats.human_size(1_982_529, 4) == "1.983MB"
    assert [formats.human_duration(s) for s in (0.5, 1, 59, 60, 119, 3599, 3600, 5400,
                                                47 * 3600, 3 * 86400, 20 * 86400,
                                                90 * 86400, 800 * 86400)] == [
        "Less than a second", "1 second", "59 seconds", "About a minute", "About a minute",
        "59 minutes", "About an hour", "2 hours", "47 hours", "3 days", "2 weeks",
        "3 months", "2 years"]
    assert formats.ellipsis("x" * 46, 45) == "x" * 44 + "…"
    assert formats.ellipsis("x" * 45, 45) == "x" * 45
    assert formats.short_id("sha256:" + "0123456789abcdef" * 4, no_trunc=False) == \
        "0123456789ab"
    assert formats.unix_time("2026-12-03T13:21:21.573582317Z") == 1796304081
    assert formats.unix_time("2024-01-01T00:00:00Z\x1b[2J") == 0  # not a time: docker's 0


def test_go_prints_values_as_fmt_does() -> None:
    assert [go_float(x) for x in (1e6, 123456789.0, 100000.0, 1.5, 0.0001, 1e-05, -2.5e-07,
                                  100.0)] == [
        "1e+06", "1.23456789e+08", "100000", "1.5", "0.0001", "1e-05", "-2.5e-07", "100"]
    assert go_print([1, "a", None, True, {"b": 1}]) == "[1 a <nil> true {1}]"
    assert go_print(GoMap({"b": [], "a": 2.5})) == "map[a:2.5 b:[]]"
    assert go_print(None, top=True) == "<no value>"


HOSTILE = ("\x1b]0;pwned\x07", "\x1b[2J", "\x9b6n", "\u202etxt.exe", "\r", "\x7f", "\ud8ff")


def _controls(text: str) -> list[str]:
    """What a terminal acts on: C0 but newline and tab, DEL, C1, bidi overrides."""
    return sorted({repr(c) for c in text if (ord(c) < 0x20 and c not in "\n\t")
                   or 0x7F <= ord(c) <= 0x9F or c in "\u202a\u202b\u202c\u202d\u202e"
                   or 0xD800 <= ord(c) <= 0xDFFF})


@pytest.mark.parametrize("evil", HOSTILE)
@pytest.mark.parametrize("template", [
    "{{.Config.Labels}}", "{{index .Config.Labels \"k\"}}", "{{range $.Config.Env}}{{.}}{{end}}",
    "{{join .Config.Env \"\\n\"}}", "{{upper (index .Config.Labels \"k\")}}", "{{.Config}}",
    "{{printf \"%s\" .Config.Env}}", "{{json .}}", "{{json .Config.Labels}}", "{{.RepoTags}}",
    "{{.Config.Labels.k}}", "{{print .Config.Env}}",
    "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}}{{end}}"])
def test_untrusted_values_never_reach_the_terminal_raw(evil: str, template: str) -> None:
    doc = {**DOC, "RepoTags": [f"x{evil}:1"],
           "Config": {"Env": [f"A={evil}", "B=\nfake row"], "Labels": {"k": f"v{evil}",
                                                                      f"key{evil}": "1"}}}
    out = _inspect(template, doc)
    assert _controls(out) == [], (template, out)
    assert out.count("\n") == 1 + template.count("\\n")  # no row faked by a value
    if template.startswith("{{json"):
        json.loads(out)  # escaped as \\uXXXX: still JSON


def test_json_keeps_the_exact_data_escaped_as_unicode_escapes() -> None:
    text = go_json({"k": "a\x1b\x9b\u202e\nb"})
    assert text == '{"k":"a\\u001b\\u009b\\u202e\\nb"}'
    assert json.loads(text) == {"k": "a\x1b\x9b\u202e\nb"}


def test_history_rows_of_hostile_text_are_escaped() -> None:
    row = formats.history_row({"created_by": "RUN \x1b[2J\nevil", "comment": "\x9b"},
                              "<missing>", 0, no_trunc=True)
    for template in ("{{.CreatedBy}} {{.Comment}}", "table", "json", "{{json .}}"):
        out = formats.render_rows(template, formats.HISTORY, [row])
        assert _controls(out) == [], out
    assert formats.render_rows("{{.CreatedBy}}", formats.HISTORY, [row]) == \
        "RUN \\x1b[2J\\x0aevil\n"


# -- the command line, on a hostile image loaded into a real store ----------------------

EVIL = "\x1b]0;pwned\x07\x1b[2J\u202e\x9b6n"
LONG = " && echo" * 8  # CreatedBy longer than docker's 45 characters


def _hostile_archive(tag: str) -> bytes:
    """A ``docker save`` archive whose history, labels and tag carry escapes."""
    layer = TarMaker().add("f", content=b"x").data()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Labels": {"evil": EVIL}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"RUN {EVIL}\tnext{LONG}",
                     "comment": f"c{EVIL}"}],
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag],
                            "Layers": ["layer.tar"]}]).encode()
    out = TarMaker(tarfile.USTAR_FORMAT)
    for name, data in ((config_name, config), ("layer.tar", layer),
                       ("manifest.json", manifest)):
        out.add(name, content=data)
    return out.data()


@pytest.fixture
def hostile_store(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("pybuild load needs root")
    root = tmp_path / "store"
    archive = tmp_path / "evil.tar"
    archive.write_bytes(_hostile_archive("evil:1"))
    run_cli("load", "-i", str(archive), root=root)
    return root


@pytest.mark.root
@pytest.mark.parametrize("args", [
    ("images", "--format", "table"), ("images", "--format", "json"),
    ("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", "--no-trunc"),
    ("history", "--format", "table"), ("history", "--format", "json"),
    ("history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Comment}}"),
    ("history", "--no-trunc", "evil:1"), ("images", "--no-trunc"),
    ("inspect", "--format", "{{.Config.Labels}} {{json .Config.Labels}}"),
    ("inspect", "-f", "{{index .Config.Labels \"evil\"}}"),
])
def test_the_cli_escapes_a_hostile_image(hostile_store: Path, args: tuple[str, ...]) -> None:
    args = (*args, "evil:1") if args[0] != "images" and "evil:1" not in args else args
    result = run_cli(*args, root=hostile_store)
    out = result.stdout.decode("utf-8", "surrogateescape")
    assert _controls(out) == [], (args, out)
    if args[0] != "images":  # the image's history and labels are shown, escaped
        assert "\\x1b]0;pwned\\x07" in out or "\\u001b]0;pwned\\u0007" in out, out
    if "json" in args:
        for line in out.splitlines():
            json.loads(line)


@pytest.mark.root
def test_no_trunc_and_json_on_the_cli(hostile_store: Path) -> None:
    image_id = run_cli("inspect", "-f", "{{.Id}}", "evil:1", root=hostile_store).stdout
    image_id = image_id.decode().strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    ids = run_cli("images", "--format", "{{.ID}}", root=hostile_store).stdout.decode().split()
    assert ids == [image_id[7:19]]
    ids = run_cli("images", "--no-trunc", "--format", "{{.ID}}", root=hostile_store).stdout
    assert ids.decode().split() == [image_id]
    assert run_cli("images", "-q", "--no-trunc", root=hostile_store).stdout.decode().split() \
        == [image_id]
    assert run_cli("images", "-q", "--format", "table", root=hostile_store).stdout.decode() \
        .split() == [image_id[7:19]]  # as docker: -q makes the table format the IDs
    line = run_cli("history", "--format", "json", "evil:1", root=hostile_store).stdout
    row = json.loads(line)
    assert row["ID"] == image_id[7:19] and row["CreatedBy"].startswith("RUN \x1b]0;pwned")
    assert row["CreatedBy"].endswith("…") and len(row["CreatedBy"]) == 45
    whole = json.loads(run_cli("history", "--format", "json", "--no-trunc", "evil:1",
                               root=hostile_store).stdout)
    assert whole["CreatedBy"] == f"RUN {EVIL} next{LONG}" and whole["ID"] == image_id
    inspect = json.loads(run_cli("inspect", "--format", "json", "evil:1",
                                 root=hostile_store).stdout)
    assert inspect[0]["Config"]["Labels"]["evil"] == EVIL


@pytest.mark.root
@pytest.mark.parametrize(("args", "names"), [
    (("images", "--format", "{{.Nope}}"), ".Nope"),
    (("history", "--format", "table {{.ID}} {{.Bogus}}", "evil:1"), "Bogus"),
    (("inspect", "--format", "{{.Config.Nope}}", "evil:1"), "Nope"),
    (("inspect", "--format", "{{.Id", "evil:1"), "unclosed action"),
    (("images", "--format", "{{nope}}"), '"nope"'),
])
def test_cli_template_errors_are_one_line(hostile_store: Path, args: tuple[str, ...],
                                          names: str) -> None:
    result = run_cli(*args, root=hostile_store, check=False)
    err = result.stderr.decode()
    assert result.returncode == 2 and result.stdout == b"", (result, err)
    assert err.startswith("pybuild: --format: ") and names in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_plain_images_does_not_import_the_template_engine(tmp_path: Path) -> None:
    """``pybuild images`` without --format pays nothing for the formats."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "builder", "--root",
                             str(tmp_path / "store"), "images"], capture_output=True,
                            check=True)
    imported = result.stderr.decode()
    assert "builder.cli.images" in imported
    for module in ("builder.cli.gotemplate", "builder.cli.gofuncs", "builder.cli.formats"):
        assert f" {module}\n" not in imported, module

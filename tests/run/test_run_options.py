"""buildx's sandbox flags reach every RUN step (issue 14, point 10).

- ``--add-host``: buildx ``build/utils.go`` ``toBuildkitExtraHosts`` (``HOST:IP`` or
  ``HOST=IP``, several IPs, ``[IPv6]``, ``host-gateway``), BuildKit
  ``frontend/dockerui/attr.go`` ``parseExtraHosts`` (lowercased, Go ``net.ParseIP``)
  and ``executor/oci/hosts.go`` (``IP<TAB>HOST`` lines after the defaults; checked
  against ``docker build`` on this machine, BuildKit v0.8.4).
- ``--ulimit``: docker/go-units ``ulimit.go`` ``ParseUlimit`` (names, -1, soft <=
  hard), applied as runc applies ``process.rlimits``
  (``executor/oci/spec_linux.go`` ``generateRlimitOpts``).
- ``--shm-size``: go-units ``RAMInBytes``; BuildKit mounts a tmpfs of that size at
  ``/dev/shm`` (``frontend/dockerfile/dockerfile2llb/convert.go``), else containerd's
  default 64 MiB (``size=65536k``).
- Cache: BuildKit ``solver/llbsolver/ops/exec.go`` ``ExecOp.CacheMap`` keys the
  extra hosts' names but blanks their IPs, and keys the ulimits and the /dev/shm
  mount.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from security.oracle import build, one_line_error

pytestmark = [
    pytest.mark.root, pytest.mark.overlay, pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, overlay"),
]

DEFAULT_HOSTS = ("127.0.0.1\tlocalhost buildkitsandbox\n"
                 "::1\tlocalhost ip6-localhost ip6-loopback\n")
REPORT = ("FROM busybox\nUSER {user}\n"
          "RUN cat /etc/hosts > /tmp/hosts; ulimit -n > /tmp/nofile; ulimit -Hn >> /tmp/nofile;"
          " ulimit -c > /tmp/core; grep ' /dev/shm ' /proc/self/mountinfo > /tmp/shm\n")


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    return ctx


def _report(bstore: Path, context: Path, out: Path, *flags: str, user: str = "0",
            ) -> dict[str, str]:
    result = build(bstore, context, REPORT.format(user=user), out, *flags)
    seen = {name: (out / "tmp" / name).read_text() for name in ("hosts", "nofile", "core",
                                                                 "shm")}
    seen["log"] = result.stderr.decode(errors="replace")
    return seen


def test_add_host_lines_reach_etc_hosts(bstore: Path, context: Path, tmp_path: Path):
    seen = _report(bstore, context, tmp_path / "out", "--no-cache",
                   "--add-host", "Foo.Example:10.1.2.3", "--add-host", "bar=::FFFF:1.2.3.4",
                   "--add-host", "multi=192.168.0.1,[FE80::1]", "--add-host", "v6:::1")
    assert seen["hosts"] == DEFAULT_HOSTS + ("10.1.2.3\tfoo.example\n1.2.3.4\tbar\n"
                                             "192.168.0.1\tmulti\nfe80::1\tmulti\n::1\tv6\n")
    # Nothing of it lands in the image: /etc/hosts is the step's own bind.
    assert not (tmp_path / "out" / "etc" / "hosts").exists() or \
        (tmp_path / "out" / "etc" / "hosts").read_text() == ""


def test_host_gateway_is_the_hosts_loopback_with_network_host(bstore: Path, context: Path,
                                                              tmp_path: Path):
    seen = _report(bstore, context, tmp_path / "out", "--no-cache", "--network", "host",
                   "--add-host", "host.docker.internal:host-gateway")
    assert seen["hosts"] == DEFAULT_HOSTS + "127.0.0.1\thost.docker.internal\n"


def test_ulimits_and_shm_size_reach_run_steps(bstore: Path, context: Path, tmp_path: Path):
    # As a non-root USER too: the limits are set before the step drops to its user.
    seen = _report(bstore, context, tmp_path / "out", "--no-cache", "--ulimit",
                   "nofile=100:200", "--ulimit", "nofile=1024:2048", "--ulimit", "core=-1",
                   "--shm-size", "128m", user="1000")
    assert seen["nofile"] == "1024\n2048\n"   # the later --ulimit nofile replaced the first
    assert seen["core"] == "unlimited\n"
    assert "size=131072k" in seen["shm"]
    assert "noexec" not in seen["shm"].split(" - ")[0]  # BuildKit's tmpfs: nosuid only
    default = _report(bstore, context, tmp_path / "default", "--no-cache")
    assert "size=65536k" in default["shm"]
    assert default["hosts"] == DEFAULT_HOSTS


def test_the_cache_key_follows_buildkits(bstore: Path, context: Path, tmp_path: Path):
    base = ["--add-host", "a:10.0.0.1", "--ulimit", "nofile=1024:2048", "--shm-size", "100m"]
    first = _report(bstore, context, tmp_path / "o1", *base)
    assert "CACHED" not in first["log"]
    assert "CACHED" in _report(bstore, context, tmp_path / "o2", *base)["log"]
    # A changed IP alone keeps the cache (BuildKit blanks the IPs in the key) ...
    same_name = _report(bstore, context, tmp_path / "o3", "--add-host", "a:10.0.0.2",
                        *base[2:])
    assert "CACHED" in same_name["log"]
    # ... every other change runs the step again, with what it asks for.
    for flags, name, expected in [
            (["--add-host", "b:10.0.0.1", *base[2:]], "hosts", "10.0.0.1\tb\n"),
            ([*base[:2], "--ulimit", "nofile=512:2048", *base[4:]], "nofile", "512\n2048\n"),
            ([*base[:4], "--shm-size", "50m"], "shm", "size=51200k"),
            (base[:4], "shm", "size=65536k")]:
        seen = _report(bstore, context, tmp_path / f"o-{len(flags)}-{name}", *flags)
        assert "CACHED" not in seen["log"], flags
        assert expected in seen[name], flags


@pytest.mark.parametrize(("flags", "message"), [
    (["--add-host", "nohost"], "--add-host 'nohost': invalid host"),
    (["--add-host", "h:1.2.3"], "invalid IP address '1.2.3'"),
    (["--add-host", "h:01.2.3.4"], "invalid IP address"),
    (["--add-host", "h:fe80::1%eth0"], "invalid IP address"),
    (["--add-host", "h:host-gateway"], "host-gateway is only known with --network host"),
    (["--ulimit", "nofile"], "invalid ulimit argument"),
    (["--ulimit", "as=1"], "invalid ulimit type 'as'"),
    (["--ulimit", "files=1"], "invalid ulimit type 'files'"),
    (["--ulimit", "nofile=10:5"], "soft limit must be less than or equal to the hard limit"),
    (["--ulimit", "cpu=1:2:3"], "too many limit values"),
    (["--ulimit", "cpu=x"], "is not a limit"),
    (["--ulimit", "nofile=-1"], "fs.nr_open"),
    (["--shm-size", "64q"], "--shm-size '64q': invalid size"),
    (["--shm-size", "-1"], "invalid size"),
])
def test_bad_values_are_one_line_errors_before_anything_runs(bstore: Path, context: Path,
                                                             flags: list[str], message: str):
    result = build(bstore, context, "FROM busybox\nRUN touch /ran\n", None, *flags, check=False)
    assert message in one_line_error(result)
    assert b"#1 " not in result.stderr   # no step started

"""buildx's sandbox flags for RUN steps: ``--add-host``, ``--ulimit``, ``--shm-size``.

Parsed and checked up front (a bad value is a one-line error naming the flag,
before anything runs), as buildx and BuildKit parse them:

- ``--add-host HOST:IP`` (or ``HOST=IP``; several IPs ``HOST=IP1,IP2``; an IPv6
  address may be ``[bracketed]``): buildx ``build/utils.go``
  ``toBuildkitExtraHosts``, then BuildKit ``frontend/dockerui/attr.go``
  ``parseExtraHosts`` (the entry lowercased, the IP parsed by Go's
  ``net.ParseIP``).  Each becomes a line ``IP<TAB>HOST`` after the default
  lines of the step's ``/etc/hosts`` (``executor/oci/hosts.go``).
  ``host-gateway`` is buildx's name for the host's address: with ``--network
  host`` that is 127.0.0.1; the default network cannot reach the host at all
  (slirp4netns without host loopback), so there it is an error.
- ``--ulimit NAME=SOFT[:HARD]`` (docker/go-units ``ParseUlimit``: its names, -1
  for unlimited, soft <= hard; a later flag for a name replaces an earlier
  one, and the list is sorted by name as docker/cli's ``UlimitOpt``): set with
  setrlimit on the step's process, as runc sets ``process.rlimits``.
- ``--shm-size SIZE`` (go-units ``RAMInBytes``: 64m, 1g, 1.5GiB, bytes without a
  suffix): the size of the step's ``/dev/shm`` tmpfs; without it the default
  64 MiB (containerd's default spec, ``size=65536k``).

The cache key (``run_inputs``) follows BuildKit's ``ExecOp.CacheMap``
(``solver/llbsolver/ops/exec.go``): the extra hosts' names are in it but not
their IPs (BuildKit blanks ``ExtraHosts[i].IP``), the ulimits are (``Meta``), and
so is the ``/dev/shm`` tmpfs mount and its size.
"""

from __future__ import annotations

import ipaddress
import re
import resource

import msgspec

from builder.errors import BuildError, UsageError

# docker/go-units ulimit.go ulimitNameMapping ("as" is disabled there too).
ULIMIT_NAMES = {"core": 4, "cpu": 0, "data": 2, "fsize": 1, "locks": 10, "memlock": 8,
                "msgqueue": 12, "nice": 13, "nofile": 7, "nproc": 6, "rss": 5, "rtprio": 14,
                "rttime": 15, "sigpending": 11, "stack": 3}
HOST_GATEWAY = "host-gateway"
_BAD_HOST_CHARS = re.compile(r"[\x00-\x20\x7f,#]")
_SIZE = re.compile(r"(\d+\.?\d*|\.\d+) ?(b|[kmgtp](?:i?b)?|)", re.IGNORECASE)
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_INT64_MAX = (1 << 63) - 1


class ExtraHost(msgspec.Struct, frozen=True):
    name: str
    ip: str   # as Go's net.IP.String() prints it


class Ulimit(msgspec.Struct, frozen=True):
    name: str   # a key of ULIMIT_NAMES
    soft: int   # -1: unlimited
    hard: int

    @property
    def resource(self) -> int:
        return ULIMIT_NAMES[self.name]


class RunOptions(msgspec.Struct, frozen=True):
    """What ``--add-host``, ``--ulimit`` and ``--shm-size`` ask of every RUN step."""

    extra_hosts: tuple[ExtraHost, ...] = ()
    ulimits: tuple[Ulimit, ...] = ()
    shm_size: int = 0   # bytes; 0: the default 64 MiB

    def hosts_lines(self) -> str:
        return "".join(f"{host.ip}\t{host.name}\n" for host in self.extra_hosts)


def run_inputs(options: RunOptions | None) -> list[tuple[str, str]]:
    """The step's cache-key inputs for ``options``; none when a flag is not given, so
    the keys of builds without them stay as they were."""
    if options is None:
        return []
    out = []
    if options.extra_hosts:
        out.append(("add-host", ",".join(host.name for host in options.extra_hosts)))
    if options.ulimits:
        out.append(("ulimit", ",".join(f"{u.name}={u.soft}:{u.hard}" for u in options.ulimits)))
    if options.shm_size:
        out.append(("shm-size", str(options.shm_size)))
    return out


def parse_run_options(add_hosts: list[str], ulimits: list[str], shm_size: str | None,
                      network: str) -> RunOptions:
    """The three flags as typed data; UsageError (one line, naming the flag) if invalid."""
    hosts = [host for value in add_hosts for host in parse_add_host(value, network)]
    by_name = {limit.name: limit for limit in map(parse_ulimit, ulimits)}
    nofile = by_name.get("nofile")
    if nofile is not None:
        _check_nofile(nofile)
    return RunOptions(extra_hosts=tuple(hosts),
                      ulimits=tuple(by_name[name] for name in sorted(by_name)),
                      shm_size=parse_size(shm_size) if shm_size else 0)


def parse_add_host(value: str, network: str) -> list[ExtraHost]:
    """``--add-host HOST:IP[,IP...]`` (or ``HOST=IP``) -> one ExtraHost per IP."""
    host, sep, ips = value.partition("=")
    if not sep:
        host, sep, ips = value.partition(":")
    if not sep or not host or not ips:
        raise UsageError(f"--add-host {value!r}: invalid host, expected HOST:IP")
    if _BAD_HOST_CHARS.search(host):
        raise UsageError(f"--add-host {value!r}: invalid host name {host!r}")
    if ips == HOST_GATEWAY:
        if network != "host":
            raise UsageError(f"--add-host {value!r}: {HOST_GATEWAY} is only known with "
                             "--network host (the default RUN network cannot reach the host)")
        ips = "127.0.0.1"
    out = []
    for text in ips.split(","):
        if len(text) > 2 and text[0] == "[" and text[-1] == "]":
            text = text[1:-1]
        try:
            ip = ipaddress.ip_address(text.lower())
        except ValueError:
            raise UsageError(f"--add-host {value!r}: invalid IP address {text!r}") from None
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id:  # Go's net.ParseIP takes no zone
                raise UsageError(f"--add-host {value!r}: invalid IP address {text!r}")
            if ip.ipv4_mapped is not None:  # Go prints an IPv4-mapped address as IPv4
                ip = ip.ipv4_mapped
        out.append(ExtraHost(host.lower(), str(ip)))
    return out


def parse_ulimit(value: str) -> Ulimit:
    """``--ulimit NAME=SOFT[:HARD]`` as docker/go-units ParseUlimit reads it."""
    name, sep, limits = value.partition("=")
    if not sep:
        raise UsageError(f"--ulimit {value!r}: invalid ulimit argument, expected NAME=SOFT[:HARD]")
    if name not in ULIMIT_NAMES:
        raise UsageError(f"--ulimit {value!r}: invalid ulimit type {name!r} (one of "
                         f"{', '.join(sorted(ULIMIT_NAMES))})")
    parts = limits.split(":")
    if len(parts) > 2:
        raise UsageError(f"--ulimit {value!r}: too many limit values, at most soft:hard")
    numbers = []
    for text in parts:
        if not re.fullmatch(r"[+-]?\d+", text) or not -1 <= int(text) <= _INT64_MAX:
            raise UsageError(f"--ulimit {value!r}: {text!r} is not a limit (a number, or -1 "
                             "for unlimited)")
        numbers.append(int(text))
    soft, hard = numbers[0], numbers[-1]
    if hard != -1 and (soft == -1 or soft > hard):
        raise UsageError(f"--ulimit {value!r}: the soft limit must be less than or equal to "
                         "the hard limit")
    return Ulimit(name, soft, hard)


def _check_nofile(limit: Ulimit) -> None:
    """The kernel refuses more open files than fs.nr_open (and "unlimited"): say so now,
    not in the first RUN step."""
    try:
        with open("/proc/sys/fs/nr_open") as sysctl:
            most = int(sysctl.read())
    except (OSError, ValueError):
        return
    if -1 in (limit.soft, limit.hard) or max(limit.soft, limit.hard) > most:
        raise UsageError(f"--ulimit nofile={limit.soft}:{limit.hard}: more than the kernel "
                         f"allows (fs.nr_open = {most}; -1 is not allowed for nofile)")


def parse_size(value: str) -> int:
    """``--shm-size`` as docker/go-units RAMInBytes reads it: a number, an optional
    space, then b, or k/m/g/t/p (binary units) with an optional b or ib."""
    match = _SIZE.fullmatch(value)
    if match is None:
        raise UsageError(f"--shm-size {value!r}: invalid size (e.g. 64m, 1g, 1048576)")
    number, suffix = float(match.group(1)), match.group(2).lower()
    size = int(number * _UNITS[suffix[0]]) if suffix[:1] in _UNITS else int(number)
    if size > _INT64_MAX:
        raise UsageError(f"--shm-size {value!r}: too large")
    return size


def apply_ulimits(options: RunOptions | None) -> None:
    """setrlimit each ulimit on this process (the step's, before its capabilities go:
    raising a hard limit needs CAP_SYS_RESOURCE).  ``resource`` is imported with this
    module: this runs after pivot_root, where an import would read the image."""
    for limit in () if options is None else options.ulimits:
        try:
            resource.setrlimit(limit.resource, (limit.soft, limit.hard))
        except (OSError, ValueError) as err:
            why = err.strerror if isinstance(err, OSError) else str(err)
            raise BuildError(f"--ulimit {limit.name}={limit.soft}:{limit.hard}: {why}") from None

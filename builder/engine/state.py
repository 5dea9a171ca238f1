"""A stage's state while it builds: image config, layer chain, args in scope."""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from builder.explain.steps import StepRecord
from builder.platforms import Platform

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def go_quote(text: str) -> str:
    """Go's strconv.Quote, which ``fmt.Sprintf("%q")`` uses in BuildKit's history."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                        "\t": "\\t", "\v": "\\v"}[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not char.isprintable() and code > 0x7F:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def go_list(items: list[str], quoted: bool = False) -> str:
    """``%v`` (or ``%q``) of a Go string slice: ``[a b]``."""
    return "[" + " ".join(go_quote(i) if quoted else i for i in items) + "]"


class StageState(msgspec.Struct):
    name: str
    image: dict[str, Any]   # the image config document (image spec JSON)
    chain: str | None
    base_ref: str = ""
    cache_key: str = ""       # the key of the last layer step, or the base image's
    base_name: str = ""       # the FROM text (a tag), for explain's base-changed
    ran: str = ""             # the first step of its chain that ran in this build (explain)
    args: dict[str, str | None] = msgspec.field(default_factory=dict)
    steps: list[StepRecord] = msgspec.field(default_factory=list)
    cmd_set: bool = False
    platform: Platform | None = None  # what its RUN steps run as and its keys hold

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.image.setdefault("config", {})
        return config

    def env(self) -> dict[str, str]:
        pairs = (entry.split("=", 1) for entry in self.config.get("Env") or [])
        return {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}

    def set_env(self, key: str, value: str) -> None:
        env = list(self.config.get("Env") or [])
        for i, entry in enumerate(env):
            if entry.split("=", 1)[0] == key:
                env[i] = f"{key}={value}"
                break
        else:
            env.append(f"{key}={value}")
        self.config["Env"] = env

    def expansion_env(self) -> dict[str, str]:
        """Variables visible to word expansion: ARGs in scope, overridden by ENV."""
        values = {k: v for k, v in self.args.items() if v is not None}
        values.update(self.env())
        return values

    def run_env(self) -> list[str]:
        """The environment of a RUN: the image's Env plus ARGs that ENV does not set."""
        env = self.env()
        if "PATH" not in env:
            env = {"PATH": DEFAULT_PATH, **env}
        for key, value in self.args.items():
            if value is not None and key not in env:
                env[key] = value
        return [f"{k}={v}" for k, v in env.items()]

    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or ["/bin/sh", "-c"])

    def workdir(self) -> str:
        return self.config.get("WorkingDir") or "/"

    def fork(self, name: str) -> StageState:
        """A new stage built FROM this one."""
        return StageState(name=name, image=copy.deepcopy(self.image), chain=self.chain,
                          base_ref=self.base_ref, cache_key=self.cache_key,
                          base_name=self.base_name, ran=self.ran, platform=self.platform)

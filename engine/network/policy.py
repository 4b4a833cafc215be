"""The allowlist: which host names and ports a sandbox in ``allowlist`` mode may reach.

Pure data and matching, shared by the profile loader (validation), the supervisor's proxy
and DNS stub (decisions) and the launcher (which ports PID 1 listens on). Nothing here
touches the network.

A rule is ``NAME``, ``*.DOMAIN``, ``NAME:PORT`` or ``*.DOMAIN:PORT``. Without a port a rule
allows ports 443 and 80. ``*.example.com`` matches every name below example.com, at any
depth (``a.example.com``, ``a.b.example.com``), but not ``example.com`` itself: allow both
when both are needed. Names are compared lower-case, without a trailing dot. IP addresses are
never rules: an allowlist is about names, and an address is reached by naming it in the
resolver map (``hosts``) and allowing that name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_PORTS = (443, 80)
MAX_PORTS = 32  # distinct ports in one allowlist: PID 1 listens on each of them

# where the sandbox reaches the supervisor (all inside the sandbox's own network namespace)
PROXY_HOST = "127.0.0.1"
PROXY_PORT = 3128
DNS_HOST = "127.0.0.1"
DNS_PORT = 53
# the stub answers allowlisted names with addresses from this loopback range; a connection
# to one of them is captured by the supervisor, which knows the name it stands for
FAKE_NET = ipaddress.IPv4Network("127.100.0.0/16")
# ports whose captured connections would clash with the proxy's and the stub's own sockets:
# those ports are reached through the proxy only
RESERVED_PORTS = (PROXY_PORT, DNS_PORT)

_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


class RuleError(ValueError):
    """A rule or name that cannot be used; ``fix`` says what to write instead."""

    def __init__(self, msg: str, fix: str) -> None:
        super().__init__(msg)
        self.fix = fix


@dataclass(frozen=True, slots=True)
class Rule:
    text: str  # normalised, as shown in events: "*.example.com", "api.example.org:8443"
    name: str  # the name, or for a wildcard the domain it stands under ("example.com")
    wildcard: bool
    ports: tuple[int, ...]

    def matches_name(self, host: str) -> bool:
        if self.wildcard:
            return host.endswith("." + self.name)
        return host == self.name

    def matches(self, host: str, port: int) -> bool:
        return port in self.ports and self.matches_name(host)


def normalise_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def is_ip_literal(host: str) -> bool:
    h = host.strip("[]")
    try:
        ipaddress.ip_address(h)
        return True
    except ValueError:
        pass
    # forms inet_aton accepts and ip_address does not: 127.1, 0x7f.1, 2130706433
    return bool(re.fullmatch(r"(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}", h.lower()))


def check_name(host: str, *, what: str = "name") -> str:
    """A valid DNS name, normalised; raises RuleError."""
    h = normalise_host(host)
    if not h:
        raise RuleError(f"empty {what}", fix='write a host name like "pypi.org"')
    if "://" in h or "/" in h:
        raise RuleError(f"{host!r} is a URL, not a host name",
                        fix="write only the host name, like \"pypi.org\" (and :PORT if needed)")
    if is_ip_literal(h):
        raise RuleError(f"{host!r} is an IP address; the allowlist holds names",
                        fix='name it in [network] hosts (hosts = { "db.internal" = "10.0.0.5" }) '
                        "and allow that name")
    if len(h) > 253 or not _NAME.fullmatch(h):
        raise RuleError(f"{host!r} is not a valid host name",
                        fix="use letters, digits, '-' and '.', like \"files.example.com\"")
    return h


def parse_rule(text: str) -> Rule:
    """``NAME``, ``*.DOMAIN``, with an optional ``:PORT``; raises RuleError."""
    s = text.strip()
    if "://" in s or "/" in s:
        raise RuleError(f"{text!r} is a URL, not a host name",
                        fix='write only the host name, like "pypi.org" (and :PORT if needed)')
    if s in ("*", "*.", ""):
        raise RuleError(f"{text!r} would allow every name",
                        fix='list the domains the program needs, like "*.pypi.org"')
    ports: tuple[int, ...] = DEFAULT_PORTS
    host = s
    if s.count(":") == 1:
        host, _, p = s.partition(":")
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise RuleError(f"bad port {p!r} in {text!r}",
                            fix='write a port from 1 to 65535, like "api.example.org:8443"')
        ports = (int(p),)
    elif s.count(":") > 1:
        raise RuleError(f"{text!r} is an IPv6 address or malformed; the allowlist holds names",
                        fix='write NAME or NAME:PORT, like "pypi.org" or "api.example.org:8443"')
    wildcard = False
    if host.startswith("*."):
        wildcard = True
        host = host[2:]
    elif "*" in host:
        raise RuleError(f"{text!r}: a wildcard must be a whole first label",
                        fix='write "*.example.com" (it matches names below example.com)')
    if host in ("", "*"):
        raise RuleError(f"{text!r} would allow every name",
                        fix='list the domains the program needs, like "*.pypi.org"')
    name = check_name(host)
    if wildcard and "." not in name:
        raise RuleError(f"{text!r} would allow a whole top-level domain",
                        fix='name a domain, like "*.example.com"')
    shown = ("*." if wildcard else "") + name + (f":{ports[0]}" if ports != DEFAULT_PORTS else "")
    return Rule(shown, name, wildcard, ports)


def check_address(value: str) -> str:
    """An IP address for the resolver map, normalised; raises RuleError."""
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        raise RuleError(f"{value!r} is not an IP address",
                        fix='write an IPv4 or IPv6 address, like "127.0.0.1" or "::1"') from None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str  # the allow entry that matched, or why not: "no-match", "port", "ip-address"
    reason: str  # one line for a person


class Allowlist:
    def __init__(self, rules: Iterable[str | Rule]) -> None:
        self.rules = tuple(r if isinstance(r, Rule) else parse_rule(r) for r in rules)

    def decide(self, host: str, port: int) -> Decision:
        h = normalise_host(host)
        if is_ip_literal(h):
            return Decision(False, "ip-address",
                            f"{host}:{port} is an IP address; only allowlisted names are reachable")
        for r in self.rules:
            if r.matches(h, port):
                return Decision(True, r.text, f"allowed by {r.text}")
        other = [r for r in self.rules if r.matches_name(h)]
        if other:
            ports = sorted({p for r in other for p in r.ports})
            return Decision(False, "port",
                            f"{h} is allowlisted for port {', '.join(map(str, ports))}, not {port}")
        return Decision(False, "no-match", f"{h}:{port} is not in the network allowlist")

    def name_allowed(self, host: str) -> Rule | None:
        h = normalise_host(host)
        for r in self.rules:
            if r.matches_name(h):
                return r
        return None

    def ports(self) -> tuple[int, ...]:
        return tuple(sorted({p for r in self.rules for p in r.ports}))


def capture_ports(rules: Iterable[str]) -> tuple[int, ...]:
    """The ports PID 1 listens on for captured connections (the proxy's and the stub's
    own ports excepted)."""
    return tuple(p for p in Allowlist(rules).ports() if p not in RESERVED_PORTS)


def proxy_url() -> str:
    return f"http://{PROXY_HOST}:{PROXY_PORT}"


def proxy_env() -> dict[str, str]:
    """The variables that point common tools at the proxy: curl, git (libcurl), pip
    (requests), npm, python's urllib, and node >= 22.21 with NODE_USE_ENV_PROXY. curl and
    libcurl read only the lower-case ``http_proxy``, hence both cases."""
    url = proxy_url()
    no_proxy = "localhost,127.0.0.1,::1"
    env = {}
    for name in ("http_proxy", "https_proxy"):
        env[name] = url
        env[name.upper()] = url
    env["no_proxy"] = env["NO_PROXY"] = no_proxy
    env["npm_config_proxy"] = env["npm_config_https_proxy"] = url
    env["NODE_USE_ENV_PROXY"] = "1"
    return env


class HostsMap:
    """The resolver hook: names (exact, or ``*.domain``) -> an address, used by the proxy
    instead of the system resolver."""

    def __init__(self, entries: Iterable[tuple[str, str]] = ()) -> None:
        self.exact: dict[str, str] = {}
        self.wild: list[tuple[str, str]] = []
        for name, addr in entries:
            n = normalise_host(name)
            if n.startswith("*."):
                self.wild.append((n[2:], addr))
            else:
                self.exact[n] = addr

    def __bool__(self) -> bool:
        return bool(self.exact or self.wild)

    def lookup(self, host: str) -> str | None:
        h = normalise_host(host)
        if h in self.exact:
            return self.exact[h]
        best: tuple[int, str] | None = None
        for dom, addr in self.wild:
            if h.endswith("." + dom) and (best is None or len(dom) > best[0]):
                best = (len(dom), addr)
        return best[1] if best else None

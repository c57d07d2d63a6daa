"""Is a webhook URL safe to POST to? (docs/api.md#request-rules ``webhookUrl``, docs/webhooks.md).

A webhook URL is chosen by the caller, so without a check the delivery worker becomes a proxy into
our own network: the instance metadata service (169.254.169.254), localhost admin ports, VPC
neighbours. ``check_url`` therefore:

* accepts ``https``, and ``http`` only for an allow-listed host;
* refuses userinfo (``user:pass@``: credentials in URLs leak into logs, and ``a@b`` tricks readers);
* resolves the host ONCE and refuses it if ANY returned address is not publicly routable — the
  caller must then connect to ``ResolvedTarget.ip`` rather than resolving again, otherwise a DNS
  answer that changes between check and connect (DNS rebinding) would bypass the check;
* looks through IPv6 forms that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64
  64:ff9b::/96, 6to4) so ``::ffff:127.0.0.1`` is treated like ``127.0.0.1``.

Hosts listed in ``WEBHOOK_ALLOWED_HOSTS`` (``host`` or ``host:port``, case-insensitive) skip the
address check (local receivers, tests) but are still resolved once and pinned.

The check itself does no I/O beyond the injected ``resolver``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048


class UnsafeWebhookUrl(ValueError):
    """The URL must not be used as a webhook target; ``reason`` is safe to show to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnresolvableWebhookHost(UnsafeWebhookUrl):
    """The host did not resolve. At build creation this is a bad URL; at delivery time it may be a
    transient DNS failure, so the delivery worker retries it instead of dead-lettering."""


@dataclass(frozen=True)
class ResolvedTarget:
    """Where to connect (``ip``) and what to say (``host`` for the Host header and TLS SNI)."""

    url: str
    scheme: str
    host: str
    port: int
    path_and_query: str
    ip: str

    @property
    def ip_is_v6(self) -> bool:
        return ":" in self.ip

    @property
    def host_header(self) -> str:
        """``Host`` value: the original name, with the port only when it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if DEFAULT_PORTS.get(self.scheme) == self.port else f"{host}:{self.port}"

    @property
    def connect_url(self) -> str:
        """The URL with the host replaced by the pinned IP — what the HTTP client connects to."""
        ip = f"[{self.ip}]" if self.ip_is_v6 else self.ip
        return f"{self.scheme}://{ip}:{self.port}{self.path_and_query}"

    @property
    def endpoint(self) -> str:
        """``scheme://host:port`` — the rate-limit key; carries no path or query (may hold tokens)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


# Named IPv4 ranges, most specific first so the reason is precise. Anything else that Python does
# not consider globally routable is refused by the generic fallback in `unsafe_ip_reason`.
_V4_BLOCKS: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), why)
    for net, why in (
        ("169.254.169.254/32", "the cloud instance metadata address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("0.0.0.0/8", "the 'this network' range 0.0.0.0/8"),
        ("127.0.0.0/8", "a loopback address"),
        ("10.0.0.0/8", "a private address (10.0.0.0/8)"),
        ("172.16.0.0/12", "a private address (172.16.0.0/12)"),
        ("192.168.0.0/16", "a private address (192.168.0.0/16)"),
        ("100.64.0.0/10", "a carrier-grade NAT address (100.64.0.0/10)"),
        ("169.254.0.0/16", "a link-local address"),
        ("192.0.0.0/24", "an IETF protocol assignment address (192.0.0.0/24)"),
        ("192.0.2.0/24", "a documentation address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("198.18.0.0/15", "a benchmarking address (198.18.0.0/15)"),
        ("192.88.99.0/24", "a 6to4 relay anycast address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address (240.0.0.0/4)"),
    )
)

_V6_BLOCKS: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), why)
    for net, why in (
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("fe80::/10", "an IPv6 link-local address"),
        ("fec0::/10", "an IPv6 site-local address"),
        ("fc00::/7", "an IPv6 unique-local address (fc00::/7)"),
        ("ff00::/8", "a multicast address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address (64:ff9b:1::/48)"),
        ("100::/64", "a discard-only address"),
        ("2001:db8::/32", "a documentation address"),
        ("2001::/23", "an IETF protocol assignment address (2001::/23)"),
    )
)

_NAT64_WKP = ipaddress.IPv6Network("64:ff9b::/96")
_V4_COMPAT = ipaddress.IPv6Network("::/96")


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the embedding forms."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip in _NAT64_WKP:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    if ip in _V4_COMPAT and int(ip) > 1:  # ::/128 and ::1 are handled as themselves
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-compatible"
    return None


def unsafe_ip_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be a webhook target, or ``None`` if it is publicly routable."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "an IPv6 address with a zone identifier"
        embedded = _embedded_v4(ip)
        if embedded is not None:
            v4, form = embedded
            inner = unsafe_ip_reason(v4)
            return f"{inner} ({form} IPv6)" if inner else None
        for net, why in _V6_BLOCKS:
            if ip in net:
                return why
    else:
        for net4, why in _V4_BLOCKS:
            if ip in net4:
                return why
    # Fallback for ranges not named above (the IANA special-purpose registries evolve).
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return "not a publicly routable address"
    return None


def _split_allow_entry(entry: str) -> tuple[str, int | None]:
    entry = entry.strip().lower()
    if entry.startswith("["):  # [v6] or [v6]:port
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return host, int(port) if port.isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port) if port.isdigit() else None
    return entry, None  # a bare name, IPv4, or unbracketed IPv6


def _normalise_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def is_allowed_host(host: str, port: int, allowed_hosts: Iterable[str]) -> bool:
    """``host``/``port`` matches an allow-list entry ``host`` (any port) or ``host:port``."""
    wanted = _normalise_host(host)
    for entry in allowed_hosts:
        if not entry or not entry.strip():
            continue
        name, entry_port = _split_allow_entry(entry)
        if _normalise_host(name) == wanted and (entry_port is None or entry_port == port):
            return True
    return False


def _to_ascii_host(host: str) -> str:
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise UnsafeWebhookUrl("the host name is not a valid internationalised domain name") from None


_LEGACY_V4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")


def _ip_literal(host: str) -> IPAddress | None:
    """``host`` as an IP address, including the legacy IPv4 spellings (``127.1``, ``2130706433``,
    ``0x7f.0.0.1``) that ``inet_aton`` — and so some resolvers and HTTP stacks — accept. Treating
    them as literals here means the check never depends on how a resolver reads them."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_V4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            raise UnsafeWebhookUrl("the webhook URL host is a malformed IPv4 address") from None
    return None


def check_url(
    url: str,
    allowed_hosts: frozenset[str] | Iterable[str],
    *,
    resolver: Resolver = socket.getaddrinfo,
) -> ResolvedTarget:
    """Validate ``url`` and resolve its host once; raise ``UnsafeWebhookUrl`` with a human reason.

    ``resolver`` has the signature of ``socket.getaddrinfo`` (tests inject a fake). The returned
    ``ResolvedTarget.ip`` is the address to connect to; never resolve the name again.
    """
    if not isinstance(url, str) or not url:
        raise UnsafeWebhookUrl("the webhook URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeWebhookUrl(f"the webhook URL is longer than {MAX_URL_LENGTH} characters")
    # urlsplit silently drops tabs/newlines (WHATWG rules) and treats backslashes differently from
    # browsers; refusing them up front means every parser agrees on what the host is.
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url) or "\\" in url:
        raise UnsafeWebhookUrl("the webhook URL contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port_raw = parts.port
    except ValueError:
        raise UnsafeWebhookUrl("the webhook URL is malformed or its port is invalid") from None

    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeWebhookUrl("the webhook URL must use https")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise UnsafeWebhookUrl("the webhook URL must not contain credentials (user@host)")
    raw_host = parts.hostname or ""
    if not raw_host.rstrip("."):
        raise UnsafeWebhookUrl("the webhook URL has no host")
    if "%" in raw_host:
        raise UnsafeWebhookUrl("the webhook URL host must not carry an IPv6 zone identifier")
    if port_raw == 0:
        raise UnsafeWebhookUrl("the webhook URL port must be between 1 and 65535")
    port = port_raw if port_raw is not None else DEFAULT_PORTS[scheme]

    host = _to_ascii_host(raw_host.rstrip("."))
    literal = _ip_literal(host)
    if literal is not None:
        host = str(literal)  # "127.1" / "0x7f000001" become "127.0.0.1": one spelling everywhere
    allowed = is_allowed_host(host, port, allowed_hosts)
    if scheme == "http" and not allowed:
        raise UnsafeWebhookUrl(
            f"the webhook URL must use https; plain http is only allowed for hosts in "
            f"WEBHOOK_ALLOWED_HOSTS ({host} is not)"
        )

    path_and_query = parts.path or "/"
    if parts.query:
        path_and_query += "?" + parts.query

    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        addresses = _resolve(host, port, resolver)

    if not allowed:
        for address in addresses:
            why = unsafe_ip_reason(address)
            if why:
                what = host if literal is not None else f"{host} resolves to {address}, which"
                raise UnsafeWebhookUrl(
                    f"the webhook host {what} is {why}; add the host to WEBHOOK_ALLOWED_HOSTS if this is intended"
                )

    return ResolvedTarget(
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        path_and_query=path_and_query,
        ip=str(addresses[0]),
    )


def _resolve(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    try:
        infos = resolver(host, port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnresolvableWebhookHost(f"the webhook host {host} could not be resolved") from None
    addresses: list[IPAddress] = []
    for info in infos:
        sockaddr = info[4]
        try:
            address = ipaddress.ip_address(str(sockaddr[0]))
        except ValueError:
            continue
        # getaddrinfo reports an IPv6 scope separately (sockaddr[3]); keep it so the zone check sees it.
        if isinstance(address, ipaddress.IPv6Address) and len(sockaddr) >= 4 and sockaddr[3]:
            address = ipaddress.IPv6Address(f"{address}%{sockaddr[3]}")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvableWebhookHost(f"the webhook host {host} did not resolve to any address")
    return addresses

"""SSRF guard for webhook URLs (docs/api.md#request-rules webhookUrl). Pure: every resolver here is a fake."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ssrf import (
    ResolvedTarget,
    UnresolvableWebhookHost,
    UnsafeWebhookUrl,
    check_url,
    is_allowed_host,
)

PUBLIC_V4 = "93.184.216.34"
NONE: frozenset[str] = frozenset()


def fake_resolver(table: dict[str, list[str]]) -> Callable[..., Sequence[tuple[Any, ...]]]:
    """A getaddrinfo look-alike that records calls, so tests can prove it ran exactly once."""
    calls: list[str] = []

    def resolve(host: str, port: int, *_: Any, **__: Any) -> list[tuple[Any, ...]]:
        calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out: list[tuple[Any, ...]] = []
        for ip in table[host]:
            if ":" in ip:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
        return out

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def no_dns(*_: Any, **__: Any) -> Any:
    raise AssertionError("IP literals must not be resolved")


UNSAFE_LITERALS = [
    "127.0.0.1",
    "127.1.2.3",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.1.1",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "198.18.0.1",
    "192.0.2.1",
    "::1",
    "::",
    "fe80::1",
    "febf::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:0.0.0.0",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::1",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "::127.0.0.1",  # IPv4-compatible
    "2001:db8::1",
]


def _url_for(ip: str) -> str:
    return f"https://[{ip}]/hook" if ":" in ip else f"https://{ip}/hook"


@pytest.mark.parametrize("ip", UNSAFE_LITERALS)
def test_unsafe_ip_literals_refused(ip: str) -> None:
    with pytest.raises(UnsafeWebhookUrl) as info:
        check_url(_url_for(ip), NONE, resolver=no_dns)
    assert "WEBHOOK_ALLOWED_HOSTS" in info.value.reason


@pytest.mark.parametrize("ip", UNSAFE_LITERALS)
def test_unsafe_ips_refused_when_a_name_resolves_to_them(ip: str) -> None:
    resolver = fake_resolver({"hooks.example.com": [ip]})
    with pytest.raises(UnsafeWebhookUrl, match="resolves to"):
        check_url("https://hooks.example.com/x", NONE, resolver=resolver)


@pytest.mark.parametrize(
    "ip", [PUBLIC_V4, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_pass(ip: str) -> None:
    target = check_url(_url_for(ip), NONE, resolver=no_dns)
    assert ipaddress.ip_address(target.ip) == ipaddress.ip_address(ip)
    assert target.scheme == "https" and target.port == 443 and target.path_and_query == "/hook"


def test_hostname_resolved_once_and_target_described() -> None:
    resolver = fake_resolver({"hooks.example.com": [PUBLIC_V4]})
    target = check_url("https://Hooks.Example.com:8443/in/x?token=abc#frag", NONE, resolver=resolver)
    assert resolver.calls == ["hooks.example.com"]  # type: ignore[attr-defined]
    assert target == ResolvedTarget(
        url="https://Hooks.Example.com:8443/in/x?token=abc#frag",
        scheme="https",
        host="hooks.example.com",
        port=8443,
        path_and_query="/in/x?token=abc",
        ip=PUBLIC_V4,
    )
    assert target.connect_url == f"https://{PUBLIC_V4}:8443/in/x?token=abc"
    assert target.host_header == "hooks.example.com:8443"
    assert target.endpoint == "https://hooks.example.com:8443"


def test_any_unsafe_address_among_several_refuses() -> None:
    # A name with one public and one private record could be steered to either; refuse it.
    resolver = fake_resolver({"mixed.example.com": [PUBLIC_V4, "10.0.0.5"]})
    with pytest.raises(UnsafeWebhookUrl, match=r"10\.0\.0\.5"):
        check_url("https://mixed.example.com/", NONE, resolver=resolver)


def test_name_resolving_to_loopback_allowed_only_when_listed() -> None:
    resolver = fake_resolver({"hooks.example.test": ["127.0.0.1"]})
    with pytest.raises(UnsafeWebhookUrl, match="loopback"):
        check_url("https://hooks.example.test/x", NONE, resolver=resolver)
    target = check_url("https://hooks.example.test/x", frozenset({"HOOKS.example.test"}), resolver=resolver)
    assert target.ip == "127.0.0.1"
    assert target.host == "hooks.example.test"


def test_allow_list_with_port_matches_that_port_only() -> None:
    resolver = fake_resolver({"localhost": ["127.0.0.1"]})
    allowed = frozenset({"localhost:8080"})
    assert check_url("http://localhost:8080/x", allowed, resolver=resolver).port == 8080
    with pytest.raises(UnsafeWebhookUrl):
        check_url("http://localhost:9090/x", allowed, resolver=resolver)


def test_allow_list_ip_literals_and_ipv6() -> None:
    assert check_url("http://127.0.0.1:5000/", frozenset({"127.0.0.1"}), resolver=no_dns).ip == "127.0.0.1"
    assert check_url("http://[::1]:5000/", frozenset({"[::1]:5000"}), resolver=no_dns).ip == "::1"
    assert check_url("http://[::1]:5000/", frozenset({"::1"}), resolver=no_dns).host_header == "[::1]:5000"
    assert is_allowed_host("Example.COM.", 443, ["example.com"])
    assert not is_allowed_host("evil-example.com", 443, ["example.com"])


def test_http_refused_for_hosts_not_listed() -> None:
    resolver = fake_resolver({"hooks.example.com": [PUBLIC_V4]})
    with pytest.raises(UnsafeWebhookUrl, match="https"):
        check_url("http://hooks.example.com/x", NONE, resolver=resolver)
    allowed = frozenset({"hooks.example.com"})
    assert check_url("http://hooks.example.com/x", allowed, resolver=resolver).port == 80


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@hooks.example.com/x",
        "https://user@hooks.example.com/x",
        "https://hooks.example.com@127.0.0.1/x",
        "https://:@hooks.example.com/x",
    ],
)
def test_userinfo_refused(url: str) -> None:
    resolver = fake_resolver({"hooks.example.com": [PUBLIC_V4], "127.0.0.1": ["127.0.0.1"]})
    with pytest.raises(UnsafeWebhookUrl, match="credentials"):
        check_url(url, NONE, resolver=resolver)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "empty"),
        ("https:///x", "no host"),
        ("https://", "no host"),
        ("ftp://hooks.example.com/", "https"),
        ("file:///etc/passwd", "https"),
        ("gopher://hooks.example.com/", "https"),
        ("https://hooks.example.com:99999/", "port"),
        ("https://hooks.example.com:0/", "port"),
        ("https://hooks.example.com/a\nb", "control"),
        ("https://hooks.exa\tmple.com/", "control"),
        ("https://hooks.example.com\\@127.0.0.1/", "backslash"),
        ("https://[fe80::1%25eth0]/", "zone"),
        ("https://" + "a" * 3000 + ".com/", "longer"),
    ],
)
def test_malformed_urls_refused(url: str, fragment: str) -> None:
    resolver = fake_resolver({"hooks.example.com": [PUBLIC_V4]})
    with pytest.raises(UnsafeWebhookUrl, match=fragment):
        check_url(url, NONE, resolver=resolver)


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1", "0x7f000001", "017700000001", "10.1"])
def test_legacy_ipv4_spellings_are_literals_and_refused(host: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match="is a"):
        check_url(f"https://{host}/", NONE, resolver=no_dns)


def test_legacy_ipv4_spelling_is_normalised() -> None:
    target = check_url("http://2130706433:8080/", frozenset({"127.0.0.1"}), resolver=no_dns)
    assert (target.host, target.ip, target.host_header) == ("127.0.0.1", "127.0.0.1", "127.0.0.1:8080")


def test_weird_but_valid_port_allowed() -> None:
    resolver = fake_resolver({"hooks.example.com": [PUBLIC_V4]})
    assert check_url("https://hooks.example.com:65535", NONE, resolver=resolver).path_and_query == "/"


def test_unresolvable_host_is_a_distinct_error() -> None:
    with pytest.raises(UnresolvableWebhookHost, match="could not be resolved"):
        check_url("https://nowhere.invalid/", NONE, resolver=fake_resolver({}))
    # Still an UnsafeWebhookUrl, so the API refuses it at build creation like any bad URL.
    assert issubclass(UnresolvableWebhookHost, UnsafeWebhookUrl)


def test_reason_does_not_leak_path_or_query() -> None:
    resolver = fake_resolver({"hooks.example.com": ["10.1.1.1"]})
    with pytest.raises(UnsafeWebhookUrl) as info:
        check_url("https://hooks.example.com/p?token=s3cr3t", NONE, resolver=resolver)
    assert "s3cr3t" not in str(info.value)


# --- properties ----------------------------------------------------------------------------------

PRIVATE_V4 = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "0.0.0.0/8",
]


def _addresses_in(cidr: str) -> st.SearchStrategy[ipaddress.IPv4Address]:
    net = ipaddress.IPv4Network(cidr)
    return st.integers(int(net.network_address), int(net.broadcast_address)).map(ipaddress.IPv4Address)


private_v4 = st.one_of(*(_addresses_in(c) for c in PRIVATE_V4))


@given(private_v4)
def test_property_private_ipv4_always_refused(ip: ipaddress.IPv4Address) -> None:
    with pytest.raises(UnsafeWebhookUrl):
        check_url(f"https://{ip}/", NONE, resolver=no_dns)
    with pytest.raises(UnsafeWebhookUrl):
        check_url(f"https://[::ffff:{ip}]/", NONE, resolver=no_dns)
    with pytest.raises(UnsafeWebhookUrl):
        check_url("https://h.example.com/", NONE, resolver=fake_resolver({"h.example.com": [str(ip)]}))


@given(private_v4, st.sampled_from(["127.0.0.1", "localhost", "h.example.com"]))
def test_property_allow_listed_host_always_passes(ip: ipaddress.IPv4Address, name: str) -> None:
    resolver = fake_resolver({name: [str(ip)]})
    url = f"http://{ip}/" if name == "127.0.0.1" else f"http://{name}/"
    allowed = frozenset({str(ip) if name == "127.0.0.1" else name})
    assert check_url(url, allowed, resolver=resolver).ip == str(ip)

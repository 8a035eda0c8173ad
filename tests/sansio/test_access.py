"""Allow/deny lists and the log limiter: parsing, normalisation, the decision, the bounds."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twoway.errors import ConfigError
from twoway.sansio.access import (
    AccessPolicy,
    AddressSet,
    LogLimiter,
    normalize_ip,
    parse_ip,
    parse_network,
)

# ---------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("::FFFF:7f00:1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("/run/twoway.sock", "/run/twoway.sock"),
        ("", ""),
    ],
)
def test_normalize_ip(host: str, expected: str) -> None:
    assert normalize_ip(host) == expected


def test_parse_ip_objects_and_junk() -> None:
    assert parse_ip(ipaddress.IPv6Address("::ffff:10.0.0.1")) == ipaddress.IPv4Address("10.0.0.1")
    assert parse_ip(None) is None
    assert parse_ip(b"1.2.3.4") is None
    assert parse_ip("1.2.3.4.5") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        (" 1.2.3.4 ", "1.2.3.4/32"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("::1", "::1/128"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:1.2.3.4", "1.2.3.4/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
)
def test_parse_network(text: str, expected: str) -> None:
    assert str(parse_network(text)) == expected


def test_parse_network_host_bits_suggests_both_readings() -> None:
    with pytest.raises(ValueError, match=r"host bits set \(did you mean 10.0.0.0/8 or 10.0.0.1\?"):
        parse_network("10.0.0.1/8")


@pytest.mark.parametrize("text", ["", "10.0.0.0/33", "1.2.3", "example.com", "10.0.0.0/-1"])
def test_parse_network_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not an IP address or network"):
        parse_network(text)


# ---------------------------------------------------------------------------- sets


def test_membership_v4_v6_and_mapped() -> None:
    s = AddressSet(parse_network(t) for t in ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"])
    assert "10.200.3.4" in s
    assert "::ffff:10.200.3.4" in s  # a dual-stack socket's view of an IPv4 client
    assert "11.0.0.0" not in s
    assert "192.168.1.7" in s and "192.168.1.8" not in s
    assert "2001:db8:ffff::1" in s and "2001:db9::1" not in s
    assert "/tmp/sock" not in s and None not in s
    assert len(s) == 3


def test_mapped_network_matches_plain_ipv4() -> None:
    s = AddressSet([ipaddress.IPv6Network("::ffff:127.0.0.0/104")])
    assert "127.0.0.1" in s and "::ffff:127.0.0.1" in s
    assert list(s) == [ipaddress.IPv4Network("127.0.0.0/8")]


def test_duplicates_count_once_and_iteration_round_trips() -> None:
    s = AddressSet()
    s.update(["10.0.0.0/8,10.0.0.0/8", "::/0"], option="--deny")
    assert len(s) == 2
    assert [str(n) for n in s] == ["10.0.0.0/8", "::/0"]
    assert repr(s) == "AddressSet([10.0.0.0/8, ::/0])"


def test_update_errors_name_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^--allow: 'nope' is not an IP address or network$"):
        AddressSet().update(["10.0.0.0/8,nope"], option="--allow")
    with pytest.raises(ConfigError, match=r"--deny: empty network in '10\.0\.0\.0/8,'"):
        AddressSet().update(["10.0.0.0/8,"], option="--deny")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
            lambda t: ipaddress.IPv4Network((t[0] >> (32 - t[1]) << (32 - t[1]), t[1]))
        ),
        max_size=20,
    ),
    st.lists(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address), min_size=1, max_size=20),
)
def test_membership_agrees_with_a_linear_scan(
    nets: list[ipaddress.IPv4Network], ips: list[ipaddress.IPv4Address]
) -> None:
    s = AddressSet(nets)
    for ip in ips:
        assert (ip in s) == any(ip in n for n in nets)
        mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
        assert (mapped in s) == (ip in s)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
            lambda t: ipaddress.IPv6Network((t[0] >> (128 - t[1]) << (128 - t[1]), t[1]))
        ),
        max_size=20,
    ),
    st.lists(st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address), min_size=1, max_size=20),
)
def test_v6_membership_agrees_with_a_linear_scan(
    nets: list[ipaddress.IPv6Network], ips: list[ipaddress.IPv6Address]
) -> None:
    s = AddressSet(nets)
    for ip in ips:
        if ip.ipv4_mapped is None:
            assert (ip in s) == any(ip in n for n in nets)


def test_lookup_cost_does_not_grow_with_the_list() -> None:
    # 65,536 /32s and one /16 give two prefix lengths: a lookup is two set probes. Compare
    # operation counts, not time: the probe count is what a linear scan would blow up.
    big = AddressSet(ipaddress.IPv4Network((0x0A000000 + i, 32)) for i in range(65_536))
    big.add(parse_network("172.16.0.0/16"))
    assert len(big) == 65_537 and big.probes == 2
    assert "10.0.255.255" in big and "10.1.0.0" not in big and "172.16.9.9" in big


# ---------------------------------------------------------------------------- files


def test_load_file_with_comments_and_blank_lines(tmp_path: Path) -> None:
    f = tmp_path / "deny.txt"
    f.write_text(
        "# spammers\n\n203.0.113.0/24   # the whole block\n  2001:db8::1\n::ffff:1.2.3.4\n"
    )
    s = AddressSet()
    s.load(f)
    assert [str(n) for n in s] == ["203.0.113.0/24", "1.2.3.4/32", "2001:db8::1/128"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"10.0.0.0/8\n\nbogus\n", r"deny file {}:3: 'bogus' is not an IP address or network$"),
        (b"10.0.0.1/8\n", r"deny file {}:1: '10.0.0.1/8' has host bits set"),
        (b"10.0.0.0/8, 10.1.0.0/16\n", r"deny file {}:1: one network per line"),
        (b"# ok\n1.2.3.4 5.6.7.8\n", r"deny file {}:2: one network per line"),
        (b"1.2.3.4\n\xff\xfe\n", r"deny file {}:2: not UTF-8 text$"),
    ],
)
def test_load_file_errors_name_file_and_line(tmp_path: Path, content: bytes, message: str) -> None:
    f = tmp_path / "deny.txt"
    f.write_bytes(content)
    with pytest.raises(ConfigError, match=message.format(re.escape(str(f)))):
        AddressSet().load(f, what="deny file")


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^cannot read allow file .*nope: no such file"):
        AccessPolicy.build(allow_files=[tmp_path / "nope"])


# ---------------------------------------------------------------------------- policy


def test_empty_policy_admits_everyone() -> None:
    p = AccessPolicy.build()
    assert not p.active and p.permits("1.2.3.4") and p.permits("/tmp/s")
    assert p.describe() == "no access rules"


def test_deny_wins_over_allow() -> None:
    p = AccessPolicy.build(allow=["10.0.0.0/8"], deny=["10.6.6.0/24"])
    assert p.permits("10.1.2.3")
    assert p.refusal("10.6.6.6") == "in the deny list"
    assert p.refusal("::ffff:10.6.6.6") == "in the deny list"
    assert p.refusal("11.0.0.1") == "not in the allow list"
    assert p.describe() == "allow 1 network, deny 1 network"


def test_deny_only_admits_the_rest_and_non_ip_peers() -> None:
    p = AccessPolicy.build(deny=["0.0.0.0/0"])
    assert not p.permits("127.0.0.1") and p.permits("::1") and p.permits("/run/x.sock")


def test_allow_list_refuses_non_ip_peers() -> None:
    p = AccessPolicy.build(allow=["127.0.0.0/8"])
    assert p.permits("::ffff:127.0.0.2")
    assert p.refusal("/run/x.sock") == "not in the allow list"


def test_build_from_options_and_files(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("192.0.2.0/24\n")
    (tmp_path / "d").write_text("192.0.2.66\n")
    p = AccessPolicy.build(
        allow=["198.51.100.0/24,2001:db8::/32"],
        deny=["198.51.100.13"],
        allow_files=[tmp_path / "a"],
        deny_files=[str(tmp_path / "d")],
    )
    assert p.permits("192.0.2.1") and not p.permits("192.0.2.66")
    assert p.permits("2001:db8::5") and not p.permits("198.51.100.13")
    assert p.describe() == "allow 3 networks, deny 2 networks"


# ---------------------------------------------------------------------------- log limiter


def test_log_limiter_once_per_minute_then_reports_silenced() -> None:
    lim = LogLimiter(interval=60.0)
    assert lim.check("1.2.3.4", 0.0) == 0
    assert [lim.check("1.2.3.4", t) for t in (1.0, 30.0, 59.9)] == [None, None, None]
    assert lim.check("5.6.7.8", 10.0) == 0
    assert lim.check("1.2.3.4", 60.0) == 3
    assert lim.check("1.2.3.4", 61.0) is None


def test_log_limiter_clock_going_backwards_stays_silent() -> None:
    lim = LogLimiter(interval=60.0)
    assert lim.check("a", 100.0) == 0
    assert lim.check("a", 5.0) is None


def test_log_limiter_memory_and_lines_bounded() -> None:
    lim = LogLimiter(interval=60.0, max_keys=100)
    logged = sum(lim.check(f"10.0.{i // 256}.{i % 256}", 0.0) is not None for i in range(10_000))
    assert logged == 100 and len(lim) == 100 and lim.dropped == 9_900
    # Once the interval has passed, old keys make room again.
    assert lim.check("192.0.2.1", 60.0) == 0
    assert len(lim) <= 100


def test_log_limiter_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        LogLimiter(interval=0)
    with pytest.raises(ValueError):
        LogLimiter(max_keys=0)


def test_log_limiter_loop_reconnect_is_cheap() -> None:
    # A denied client reconnecting in a loop: one entry, a counter, no growth.
    lim = LogLimiter()
    t0 = 1000.0
    assert lim.check("203.0.113.9", t0) == 0
    for i in range(1, 50_001):
        lim.check("203.0.113.9", t0 + i * 0.001)
    assert len(lim) == 1 and lim.check("203.0.113.9", t0 + 60) == 50_000

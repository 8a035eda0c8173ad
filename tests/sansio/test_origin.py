"""The ``Origin`` rule of the WebSocket gateway (pure logic)."""

from __future__ import annotations

import pytest

from twoway.sansio.origin import OriginPolicy, normalize_origin


@pytest.mark.parametrize(
    ("value", "normal"),
    [
        ("https://Chat.Example.org", "https://chat.example.org"),
        ("https://chat.example.org:443/", "https://chat.example.org"),
        ("http://a.test:8080", "http://a.test:8080"),
        ("http://[::1]:80", "http://[::1]"),
        ("null", None),
        ("chat.example.org", None),
        ("https://a.test/path", None),
        ("ftp://a.test", None),
        ("http://a.test:99999", None),
    ],
)
def test_normalize_origin(value: str, normal: str | None) -> None:
    assert normalize_origin(value) == normal


def test_default_policy_admits_the_own_page_and_non_browsers() -> None:
    policy = OriginPolicy()
    assert policy.refusal(None, "127.0.0.1:8080", False) is None
    assert policy.refusal("http://127.0.0.1:8080", "127.0.0.1:8080", False) is None
    assert policy.refusal("https://chat.example.org", "chat.example.org", True) is None
    why = policy.refusal("https://evil.example", "127.0.0.1:8080", False)
    assert why == "origin https://evil.example is not allowed (see --ws-origin)"
    # Same host, another port: another origin.
    assert policy.refusal("http://127.0.0.1:9090", "127.0.0.1:8080", False) is not None
    assert policy.refusal("garbage", "127.0.0.1:8080", False) is not None


def test_listed_origins_and_star() -> None:
    policy = OriginPolicy(("https://a.example", "http://b.example:8080"))
    assert policy.refusal("https://A.example:443", "x:1", False) is None
    assert policy.refusal("http://b.example:8080", "x:1", False) is None
    assert policy.refusal("http://b.example", "x:1", False) is not None
    assert OriginPolicy(("*",)).refusal("https://anything.example", "x:1", False) is None
    with pytest.raises(ValueError, match="is not an origin"):
        OriginPolicy(("a.example",))

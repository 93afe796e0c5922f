"""API-9: entity tags and the RFC 9110 weak comparison of If-None-Match (pure functions)."""

from __future__ import annotations

import pytest

from paycore.conditional import entity_tag, merge_vary, none_match

TAG = entity_tag(b'{"id":"p_1"}')


def test_tag_is_strong_quoted_and_depends_on_every_byte():
    assert TAG.startswith(b'"') and TAG.endswith(b'"') and not TAG.startswith(b"W/")
    assert len(TAG) == 34
    assert entity_tag(b'{"id":"p_1"}') == TAG != entity_tag(b'{"id":"p_2"}')


@pytest.mark.parametrize(
    "header",
    [TAG, b"*", b" * ", b"W/" + TAG, b'"x", ' + TAG, b'"x",W/' + TAG + b' , "y"', b'"a,b", ' + TAG],
)
def test_matches(header):
    assert none_match(header, TAG)


@pytest.mark.parametrize(
    "header",
    [b"", b'"x"', TAG[1:-1], b"W/" + TAG[1:-1], b'"x" ' + TAG, b"*, " + TAG[:-1], b'"' + TAG, b"W/*"],
)
def test_does_not_match(header):
    assert not none_match(header, TAG)


def test_merge_vary_keeps_each_name_once():
    assert (
        merge_vary([b"Authorization, Accept-Encoding,Accept-Encoding"]) == b"Authorization, Accept-Encoding"
    )
    assert (
        merge_vary([b"Origin"], ("Authorization", "accept-encoding"))
        == b"Origin, Authorization, accept-encoding"
    )

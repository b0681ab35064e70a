"""Key schedule: pinned vectors (so a change of derivation cannot go unnoticed) and channels."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from p2prtc.core import keys
from p2prtc.core.keys import ReplayedMessage, SealedChannel, TamperedMessage

SECRET = bytes(range(32))


def reference_hkdf(key: bytes, info: bytes, salt: bytes = b"", length: int = 32) -> bytes:
    """RFC 5869 written out, to check ``derive`` independently of ``cryptography``."""
    prk = hmac.new(salt or bytes(32), key, hashlib.sha256).digest()
    okm, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


def test_derive_is_hkdf_sha256_with_a_p2prtc_label() -> None:
    assert keys.derive(SECRET, "member auth") == reference_hkdf(SECRET, b"p2prtc/v1 member auth")
    assert keys.derive(SECRET, "x", salt=b"s", length=16) == reference_hkdf(
        SECRET, b"p2prtc/v1 x", salt=b"s", length=16
    )


def test_member_auth_key_vector() -> None:
    assert keys.member_auth_key(SECRET).hex() == (
        "2d5be3ea865890992d41183314f35aa0c76f05b50577b7569a4fee1ddfb250fb"
    )


def test_lookup_tag_vector() -> None:
    assert keys.lookup_tag(SECRET, bytes(32)).hex() == (
        "92e5a6b9c0f2318bd287bd31dc2f8d20a92014ca2cab14a242d57f5e855013c9"
    )


def test_share_tag_vectors_rotate_with_the_epoch() -> None:
    assert keys.share_tag(SECRET, 0) == "4be60f815ba17d14"
    assert keys.share_tag(SECRET, 491520) == "a207345bdebb6e05"


def test_share_tag_tolerates_one_epoch_of_clock_skew() -> None:
    tag = keys.share_tag(SECRET, 100)
    assert keys.matches_share_tag(SECRET, tag, 101)
    assert keys.matches_share_tag(SECRET, tag, 99)
    assert not keys.matches_share_tag(SECRET, tag, 102)
    assert not keys.matches_share_tag(bytes(32), tag, 100)


def test_epoch_is_the_hour_number() -> None:
    assert keys.epoch_of(1_769_472_000.5) == 491520
    assert keys.epoch_of(3599.9) == 0
    assert keys.epoch_of(120, period=60) == 2


def test_topic_vectors() -> None:
    assert keys.member_topic(SECRET) == "4bdbec9f8f135444ecc3f460679c4bb9"
    assert keys.invite_topic("7") == "bce98e266577d0f1942e3165e73f2408"
    assert keys.invite_topic("8") != keys.invite_topic("7")


def test_transcript_hash_vector_and_framing() -> None:
    assert keys.transcript_hash(b"a", b"bc").hex() == (
        "b534ce16ac9c8b36823f39a395ce8e0e3c7ad9605b82b5444f18cadacd217a5d"
    )
    assert keys.transcript_hash(b"ab", b"c") != keys.transcript_hash(b"a", b"bc")


def test_new_secrets_are_random() -> None:
    assert len(keys.new_secret()) == 32
    assert keys.new_secret() != keys.new_secret()


def test_sealed_channel_vectors() -> None:
    channel = SealedChannel(bytes(32), bytes([1]) * 32)
    assert channel.seal(b"hello", b"aad").hex() == (
        "0000000000000000f7628bd23a9657b6b795193267c28a131d64d26b7f"
    )
    assert channel.seal(b"").hex() == "00000000000000011e8d8924594cfe1aec7351f6b0110f3e"
    session = keys.session_channel(SECRET, b"salt", "member", initiator=True)
    assert session.seal(b"x").hex() == "00000000000000000f8fa878b5c8caed6f0d1531a8d4c4add1"


def channel_pair() -> tuple[SealedChannel, SealedChannel]:
    return (
        keys.session_channel(SECRET, b"salt", "test", initiator=True),
        keys.session_channel(SECRET, b"salt", "test", initiator=False),
    )


def test_both_directions_work_in_order() -> None:
    alice, bob = channel_pair()
    for n in range(3):
        assert bob.open(alice.seal(b"a%d" % n, b"h"), b"h") == b"a%d" % n
        assert alice.open(bob.seal(b"b%d" % n)) == b"b%d" % n


def test_a_side_cannot_open_its_own_messages() -> None:
    alice, _ = channel_pair()
    with pytest.raises(TamperedMessage):
        alice.open(alice.seal(b"echo"))


def test_replay_is_rejected() -> None:
    alice, bob = channel_pair()
    sealed = alice.seal(b"pay 10")
    bob.open(sealed)
    with pytest.raises(ReplayedMessage) as info:
        bob.open(sealed)
    assert str(info.value).startswith("A sealed message was replayed, reordered or dropped.")


def test_reordering_is_rejected_and_in_order_delivery_still_works() -> None:
    alice, bob = channel_pair()
    first, second = alice.seal(b"1"), alice.seal(b"2")
    with pytest.raises(ReplayedMessage):
        bob.open(second)
    assert bob.open(first) == b"1"
    assert bob.open(second) == b"2"


@pytest.mark.parametrize("position", [0, 7, 8, -1])
def test_any_flipped_bit_is_detected(position: int) -> None:
    alice, bob = channel_pair()
    genuine = alice.seal(b"payload")
    forged = bytearray(genuine)
    forged[position] ^= 0x01
    with pytest.raises(TamperedMessage):
        bob.open(bytes(forged))
    # A forgery does not advance the counter: the genuine message still opens.
    assert bob.open(genuine) == b"payload"


def test_wrong_aad_and_short_input_are_rejected() -> None:
    alice, bob = channel_pair()
    with pytest.raises(TamperedMessage):
        bob.open(alice.seal(b"x", b"one"), b"two")
    with pytest.raises(TamperedMessage, match="too short"):
        bob.open(b"\x00" * 7)


def test_same_key_both_ways_is_refused() -> None:
    with pytest.raises(ValueError):
        SealedChannel(bytes(32), bytes(32))

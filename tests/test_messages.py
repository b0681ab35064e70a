"""The typed wire messages (p2prtc/core/messages.py): round trips, and hostile input refused.

Every decoder gets junk, wrong types, wrong sizes and path-like names; each must answer with
the message or ``BadMessage`` naming the field, never another exception.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2prtc.core.keys import share_tag
from p2prtc.core.messages import (
    MAX_RETIRED_TAGS,
    Announcement,
    BadMessage,
    Opening,
    OpeningKind,
    Rekey,
    Reply,
    SignalKind,
    SignalMessage,
    Welcome,
)

SHARE_ID = bytes(range(16))
SECRET = bytes(range(32))
WELCOME = Welcome(SHARE_ID, SECRET, "analysis.ipynb", ("a1b2c3d4e5f60718",), generation=2)


def welcome_with(**changes: Any) -> bytes:
    fields = json.loads(WELCOME.encode())
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def test_a_welcome_round_trips() -> None:
    assert Welcome.decode(WELCOME.encode()) == WELCOME


def test_a_welcome_of_a_daemon_before_versions_and_generations_is_read() -> None:
    legacy = json.dumps(
        {"share_id": SHARE_ID.hex(), "secret": SECRET.hex(), "name": "a.ipynb", "members": []}
    ).encode()
    welcome = Welcome.decode(legacy)
    assert (welcome.name, welcome.generation, welcome.members) == ("a.ipynb", 0, ())


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"share_id": ""}, "share_id"),  # would make the share's folder the shares directory
        ({"share_id": "00" * 15}, "share_id"),
        ({"share_id": "zz" * 16}, "share_id"),
        ({"share_id": ...}, "share_id"),
        ({"secret": ""}, "secret"),
        ({"secret": "00" * 31}, "secret"),
        ({"secret": 7}, "secret"),
        ({"name": ""}, "file name"),
        ({"name": "   "}, "file name"),
        ({"name": ".."}, "file name"),
        ({"name": "."}, "file name"),
        ({"name": ".bashrc"}, "file name"),
        ({"name": "../../etc/passwd"}, "file name"),
        ({"name": "/etc/passwd"}, "file name"),
        ({"name": "dir/a.ipynb"}, "file name"),
        ({"name": "..\\a.ipynb"}, "file name"),
        ({"name": "a\x00.ipynb"}, "file name"),
        ({"name": "a\n.ipynb"}, "file name"),
        ({"name": "x" * 256}, "file name"),
        ({"name": None}, "file name"),
        ({"members": "a1b2"}, "members"),
        ({"members": [""]}, "member id"),
        ({"members": ["../x"]}, "member id"),
        ({"members": ["a b"]}, "member id"),
        ({"members": [7]}, "member id"),
        ({"members": ["a1", "a1"]}, "twice"),
        ({"members": ["m"] * 1025}, "members"),
        ({"generation": -1}, "generation"),
        ({"generation": "1"}, "generation"),
        ({"generation": True}, "generation"),
        ({"generation": 1.5}, "generation"),
        ({"v": 2}, "version"),
    ],
)
def test_a_hostile_welcome_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(BadMessage, match=field):
        Welcome.decode(welcome_with(**changes))


@pytest.mark.parametrize("payload", [b"", b"[]", b"null", b"{", b"\xff\xfe", b'"welcome"'])
def test_a_welcome_that_is_not_a_json_object_is_refused(payload: bytes) -> None:
    with pytest.raises(BadMessage):
        Welcome.decode(payload)


path_like = st.sampled_from(["", ".", "..", "/", "\\", "\x00", ".x", "a/b", "~", " ", "\n"])
fields = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=80),
    path_like,
    st.builds("".join, st.lists(path_like | st.text(max_size=4), max_size=6)),
    st.lists(st.text(max_size=20) | path_like, max_size=4),
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["v", "share_id", "secret", "name", "members", "generation"]), fields
    )
)
def test_fuzzed_welcomes_decode_to_safe_fields_or_bad_message(message: dict[str, Any]) -> None:
    try:
        welcome = Welcome.decode(json.dumps(message).encode())
    except BadMessage:
        return
    # Whatever got through is safe to use as a folder (share id) and a file name.
    assert len(welcome.share_id) == 16 and len(welcome.secret) == 32
    assert welcome.name.strip() and not welcome.name.startswith(".")
    assert "/" not in welcome.name and "\\" not in welcome.name and "\x00" not in welcome.name
    assert welcome.generation >= 0


def test_a_rekey_round_trips_and_needs_a_generation() -> None:
    rekey = Rekey(SECRET, 3, ("a1", "b2"))
    assert Rekey.decode(rekey.encode()) == rekey
    no_generation = json.dumps({"secret": SECRET.hex(), "members": ["a1"]}).encode()
    with pytest.raises(BadMessage, match="generation"):
        Rekey.decode(no_generation)
    with pytest.raises(BadMessage, match="secret"):
        Rekey.decode(json.dumps({"secret": "00", "generation": 1, "members": []}).encode())


def test_openings_and_replies_round_trip() -> None:
    for opening in (Opening(OpeningKind.INVITE, "42"), Opening(OpeningKind.MEMBER)):
        assert Opening.decode(opening.encode()) == opening
    for reply in (Reply(), Reply("CodeExpired")):
        assert Reply.decode(reply.encode()) == reply


@pytest.mark.parametrize(
    "data",
    [
        b'{"kind": "invite", "nameplate": "1"}',  # no version
        b'{"v": 2, "kind": "member"}',
        b'{"v": 1, "kind": "admin"}',
        b'{"v": 1, "kind": "invite", "nameplate": "../1"}',
        b'{"v": 1, "kind": "invite", "nameplate": "0"}',
        b'{"v": 1, "kind": "invite", "nameplate": 1}',
        b'{"v": 1, "kind": "invite"}',
        b'{"v": 1, "kind": "member", "pad": "' + b"x" * 1024 + b'"}',
    ],
)
def test_a_bad_opening_is_refused(data: bytes) -> None:
    with pytest.raises(BadMessage):
        Opening.decode(data)


def test_a_reply_that_is_neither_ok_nor_an_error_is_refused() -> None:
    for data in (b'{"ok": 1}', b'{"ok": false, "kind": "a b"}', b"[true]"):
        with pytest.raises(BadMessage):
            Reply.decode(data)


def test_an_announcement_keeps_only_nameplates_and_tags() -> None:
    tag = share_tag(SECRET, 5)
    announcement = Announcement(("3", "17"), (tag,))
    assert Announcement.decode(announcement.encode()) == announcement
    hostile = {"v": "1", "n": "3,,0,x,../1,1234567", "t": f"{tag},ZZ,{tag.upper()},{tag}0"}
    assert Announcement.decode(hostile) == Announcement(("3",), (tag,))
    assert Announcement.decode({}) == Announcement()
    with pytest.raises(BadMessage, match="version"):
        Announcement.decode({"v": "2"})


def test_retired_tags_travel_apart_bounded_and_only_when_there_are_some() -> None:
    tags = tuple(share_tag(SECRET, epoch) for epoch in range(MAX_RETIRED_TAGS + 3))
    assert "r" not in Announcement(("3",), tags[:1]).encode()  # as older daemons send it
    encoded = Announcement((), tags[:1], tags).encode()
    assert len(f"r={encoded['r']}".encode()) <= 255  # one TXT string
    decoded = Announcement.decode(encoded)
    assert decoded.retired == tags[:MAX_RETIRED_TAGS] and decoded.tags == tags[:1]
    hostile = Announcement.decode({"r": ",".join(("zz", *tags[:2], "../x"))})
    assert hostile.retired == tags[:2]


def test_signal_messages_round_trip_and_refuse_junk() -> None:
    presence = SignalMessage(SignalKind.PRESENCE, "ab12", "")
    pipe = SignalMessage(SignalKind.PIPE, "ab12", "cd34", "s1", 3, b"\x00\xff")
    for message in (presence, pipe):
        assert SignalMessage.decode(message.encode()) == message
    base = json.loads(pipe.encode())
    for changes in (
        {"v": 2},
        {"k": "shell"},
        {"from": ""},
        {"from": 5},
        {"to": "a/b"},
        {"n": -1},
        {"n": "0"},
        {"d": "not base64!"},
        {"s": None},
    ):
        with pytest.raises(BadMessage):
            SignalMessage.decode(json.dumps({**base, **changes}).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_bad_messages_for_every_decoder(data: bytes) -> None:
    decoders: list[Callable[[bytes], object]] = [
        Welcome.decode,
        Rekey.decode,
        Opening.decode,
        Reply.decode,
        SignalMessage.decode,
    ]
    for decode in decoders:
        with contextlib.suppress(BadMessage):
            decode(data)

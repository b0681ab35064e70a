"""Daemon names (core/names.py), their mark on Jupyter awareness (core/awareness.py),
comparing a command's settings with a running daemon's (daemon/config.py), and what a home
keeps of names and of what members told (daemon/state.py): no daemon, no network."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Awareness, Doc

from p2prtc.core.awareness import mark_machine
from p2prtc.core.handshake import MemberInitiator
from p2prtc.core.keys import new_secret
from p2prtc.core.membership import Standing, rotate
from p2prtc.core.names import (
    MAX_NAME_BYTES,
    MAX_NAME_CHARS,
    BadName,
    check_name,
    default_name,
    label,
    name_feature,
    name_from_features,
)
from p2prtc.daemon.config import BadSetting, DaemonConfig, settings_not_applied
from p2prtc.daemon.dialer import Identity
from p2prtc.daemon.names import KnownNames
from p2prtc.daemon.state import MAX_RETIRED_SECRETS, ShareRecord, load_records

HOSTILE = [
    "",
    " alice",
    "alice ",
    "two\nlines",
    "\x1b[31mred",
    "tab\there",
    "\u202eevil",  # right-to-left override: spoofs what follows on the terminal
    "a\u2028b",  # line separator
    "zero\u200bwidth",
    "x" * 65,
    "é" * 65,
]


GOOD = ["alice@laptop", "Bob's desk ✏", "Zoë", "日本語のマシン", "x" * 64]


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass_and_travel_in_a_handshake_segment(name: str) -> None:
    assert check_name(name) == name
    segment = name_feature(name)
    assert "/" not in segment  # the identity's separator
    assert name_from_features(["awareness", segment]) == name


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_and_dropped_from_the_network(name: str) -> None:
    with pytest.raises(BadName):
        check_name(name)
    segment = "name=" + base64.urlsafe_b64encode(name.encode()).decode()
    assert name_from_features(["awareness", segment]) is None


@pytest.mark.parametrize("segment", ["name=!!!", "name=" + "A" * 10_000, "name=/w==", "name="])
def test_garbage_name_segments_are_no_name(segment: str) -> None:
    assert name_from_features([segment]) is None


def test_the_longest_name_fits_the_handshake_identity() -> None:
    for name in ("x" * MAX_NAME_CHARS, "é" * MAX_NAME_CHARS, "✏" * (MAX_NAME_BYTES // 3)):
        identity = Identity("d" * 16, "r" * 8, name).handshake_id
        MemberInitiator(bytes(16), new_secret(), identity)  # refuses ids over 255 bytes
        assert name_from_features(identity.split("/")[2:]) == name


def test_a_peer_without_a_name_segment_has_none() -> None:
    assert name_from_features(["awareness"]) is None
    assert label("1a2b3c4d5e6f7a8b", None) == "1a2b3c4d5e6f7a8b"
    assert label("1a2b3c4d5e6f7a8b", "alice") == "alice (1a2b3c4d5e6f7a8b)"


def test_the_default_name_is_user_at_host_made_valid() -> None:
    assert default_name("alice", "laptop") == "alice@laptop"
    assert default_name("al\x1bice", "lap\ntop") == "alice@laptop"
    assert len(default_name("a" * 100, "b")) == 64
    assert default_name("\x00", "\u202e") == "@"
    assert default_name(" " * 70, "\n") == "@"


def awareness_update(states: dict[int, Any]) -> bytes:
    """An awareness update as a Jupyter room encodes it (pycrdt's own encoder)."""
    awareness = Awareness(Doc())
    for client, state in states.items():
        awareness._states[client] = state
        awareness._meta[client] = {"clock": 1, "lastUpdated": 0}
    return awareness.encode_awareness_update(list(states))


def applied(update: bytes) -> dict[int, Any]:
    awareness = Awareness(Doc())
    awareness.apply_awareness_update(update, "test")
    return {c: s for c, s in awareness.states.items() if c != awareness.client_id}


def test_a_peers_users_are_marked_with_its_machine_name() -> None:
    user = {"username": "x1", "name": "Anonymous Io", "display_name": "Anonymous Io"}
    update = awareness_update({7: {"user": user, "cursors": [1]}, 8: {"cursors": []}})
    states = applied(mark_machine(update, "alice@laptop"))
    assert states[7]["user"]["display_name"] == "Anonymous Io (alice@laptop)"
    assert states[7]["user"]["name"] == "Anonymous Io" and states[7]["cursors"] == [1]
    assert states[8] == {"cursors": []}  # no user: untouched


def test_a_user_without_display_name_gets_its_name_marked() -> None:
    states = applied(mark_machine(awareness_update({3: {"user": {"name": "Ada"}}}), "lab"))
    assert states[3]["user"]["display_name"] == "Ada (lab)"


@pytest.mark.parametrize("update", [b"", b"\xff\xff\xff", b"\x01\x01\x01\x05{bad", b"\x02\x01"])
def test_an_update_that_does_not_decode_passes_as_it_is(update: bytes) -> None:
    assert mark_machine(update, "alice") == update


def test_a_state_that_is_not_an_object_passes_as_it_is() -> None:
    update = awareness_update({4: {"user": "just a string"}})
    assert json.dumps(applied(mark_machine(update, "m"))[4]) == '{"user": "just a string"}'


def test_settings_a_running_daemon_lacks_are_named() -> None:
    running = DaemonConfig.from_env({"P2PRTC_INTERFACES": "127.0.0.1", "P2PRTC_MDNS": "0"}).report()
    assert "P2PRTC_TURN_CREDENTIAL" not in running  # never sent over the control socket
    same = {"P2PRTC_INTERFACES": " 127.0.0.1 ", "P2PRTC_MDNS": "off", "P2PRTC_SIGNAL": ""}
    assert settings_not_applied(same, running) == []
    other = {"P2PRTC_SIGNAL": "ws://h:1", "P2PRTC_MDNS": "1", "P2PRTC_PEERS": "h:1"}
    assert settings_not_applied(other, running) == ["P2PRTC_MDNS", "P2PRTC_SIGNAL"]
    # A daemon that reports fewer settings (an older one) is not warned about them.
    assert settings_not_applied(other, {"P2PRTC_MDNS": False}) == ["P2PRTC_MDNS"]
    with pytest.raises(BadSetting):
        settings_not_applied({"P2PRTC_PORT": "http"}, running)


def test_a_record_keeps_what_it_was_told_and_its_last_retired_secrets(tmp_path: Path) -> None:
    """What `status` says after a restart comes from here (daemon/state.py)."""
    record = ShareRecord.new(tmp_path / "nb.ipynb", "me")
    secrets = [record.secret]
    for removed in ("b", "c", "d", "e"):
        state = rotate(record.key_state(), removed, new_secret(), "me")
        record.adopt(state)
        secrets.insert(0, state.secret)
    assert [secret for _, secret in record.retired] == secrets[1 : 1 + MAX_RETIRED_SECRETS]
    assert [generation for generation, _ in record.retired] == [3, 2, 1]
    record.departed = ["f"]
    record.told_cut_off(Standing.OUTDATED, "g")
    record.save(tmp_path)
    (loaded,) = load_records(tmp_path)
    assert loaded == record
    assert loaded.standing("me") is Standing.OUTDATED


def test_known_names_survive_a_restart_and_a_damaged_file_is_only_logged(tmp_path: Path) -> None:
    names = KnownNames(tmp_path)
    names.learn("b", "bob@desk")
    names.learn("c", None)  # a peer that sent none
    assert KnownNames(tmp_path).get("b") == "bob@desk"
    assert KnownNames(tmp_path).get("c") is None
    (tmp_path / "names.json").write_text('{"b": "bad\\nname", "d": "dora"}')
    assert (KnownNames(tmp_path).get("b"), KnownNames(tmp_path).get("d")) == (None, "dora")
    (tmp_path / "names.json").write_text("not json")
    assert KnownNames(tmp_path).get("d") is None

"""The JSON messages between daemons: typed, versioned, and validated as hostile input.

Handshake and sync frames are binary (core/handshake.py, core/framing.py); every other
message that crosses to another daemon is here, built by ``encode`` and read by ``decode``:

- ``Opening`` / ``Reply``: a rendezvous dialler's first message and the listener's answer.
- ``Welcome``: what an inviter seals to a new member (share id, secret, name, members,
  membership generation).
- ``Rekey``: a rotated share secret, with its generation, author, the remaining members
  and every removal, and optionally a reply (which rotation it answers, accepted or not).
- ``Announcement``: the mDNS TXT record (open nameplates, rotating share tags).
- ``SignalMessage``: presence and pipe messages on a signaling relay topic.

``decode`` raises ``BadMessage`` (one line saying which field) for anything that is not
exactly a message of the version it claims: wrong types, sizes, unknown kinds, names that
are paths. Version 1 is the format of the daemons that predate this module, whose messages
carried no version: those are read as version 1 (a welcome without generation has 0).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from p2prtc.core.codes import MAX_NAMEPLATE_DIGITS
from p2prtc.core.keys import SECRET_SIZE, TAG_HEX_CHARS
from p2prtc.errors import P2PError

MESSAGES_VERSION = 1
SHARE_ID_SIZE = 16
MAX_MEMBERS = 1024
MAX_MEMBER_ID_BYTES = 255
MAX_NAME_BYTES = 255
MAX_OPENING_BYTES = 1024
MAX_INSTANCE_CHARS = 64
MAX_PIPE_NUMBER = 2**31
# Retired share tags in one announcement: they fit one 255-byte TXT string.
MAX_RETIRED_TAGS = 255 // (TAG_HEX_CHARS + 1) - 1
_NAMEPLATE = re.compile(rf"[1-9][0-9]{{0,{MAX_NAMEPLATE_DIGITS - 1}}}")
_TAG = re.compile(rf"[0-9a-f]{{{TAG_HEX_CHARS}}}")
# Member ids and relay instance ids: printable, no spaces, no path separator.
_IDENTIFIER = re.compile(r"[!-.0-~]+")


class BadMessage(P2PError):
    """Another daemon sent a malformed message."""


# --- field checks -----------------------------------------------------------------------


def _object(data: bytes, max_bytes: int | None = None) -> dict[str, Any]:
    if max_bytes is not None and len(data) > max_bytes:
        raise BadMessage(f"longer than {max_bytes} bytes")
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BadMessage("not JSON") from None
    if not isinstance(message, dict):
        raise BadMessage("not a JSON object")
    if message.get("v", MESSAGES_VERSION) != MESSAGES_VERSION:
        raise BadMessage(f"version {message.get('v')!r}, this daemon reads {MESSAGES_VERSION}")
    return message


def _field(message: Mapping[str, Any], key: str, kind: type[Any]) -> Any:
    value = message.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadMessage(f"{key!r} is not a {kind.__name__}")
    return value


def _hex_bytes(message: Mapping[str, Any], key: str, size: int) -> bytes:
    text = _field(message, key, str)
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise BadMessage(f"{key!r} is not hex") from None
    if len(value) != size:
        raise BadMessage(f"{key!r} is not {size} bytes")
    return value


def _generation(message: Mapping[str, Any], default: int | None = None) -> int:
    if default is not None and "generation" not in message:
        return default
    generation: int = _field(message, "generation", int)
    if generation < 0:
        raise BadMessage("'generation' is negative")
    return generation


def _identifier(value: object, what: str, max_bytes: int) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise BadMessage(f"{what} is not an identifier")
    if len(value.encode()) > max_bytes:
        raise BadMessage(f"{what} is longer than {max_bytes} bytes")
    return value


def _members(message: Mapping[str, Any]) -> tuple[str, ...]:
    members = _field(message, "members", list)
    if len(members) > MAX_MEMBERS:
        raise BadMessage(f"more than {MAX_MEMBERS} members")
    checked = tuple(_identifier(m, "a member id", MAX_MEMBER_ID_BYTES) for m in members)
    if len(set(checked)) != len(checked):
        raise BadMessage("a member is listed twice")
    return checked


def check_file_name(name: object) -> str:
    """A name a peer gives a file: one plain, visible file name, never a path."""
    if not isinstance(name, str) or not name.strip():
        raise BadMessage("the file name is empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise BadMessage(f"the file name is longer than {MAX_NAME_BYTES} bytes")
    if "/" in name or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BadMessage("the file name is a path or has control characters")
    if name.startswith("."):
        raise BadMessage("the file name is hidden or a relative path (starts with '.')")
    if not name.isprintable():
        raise BadMessage("the file name has unprintable characters")
    return name


def _nameplate(value: object) -> str:
    if not isinstance(value, str) or not _NAMEPLATE.fullmatch(value):
        raise BadMessage("the nameplate is not a number")
    return value


Kind = TypeVar("Kind", bound=enum.Enum)


def _kind(kinds: type[Kind], value: object) -> Kind:
    try:
        return kinds(value)
    except ValueError:
        raise BadMessage(f"unknown kind {value!r:.40}") from None


def _encode(fields: Mapping[str, Any]) -> bytes:
    return json.dumps({"v": MESSAGES_VERSION, **fields}).encode()


# --- the rendezvous pipe's envelope -----------------------------------------------------


class OpeningKind(enum.Enum):
    INVITE = "invite"  # a joiner, for the invitation on ``nameplate``
    MEMBER = "member"  # a member, to authenticate and connect


@dataclass(frozen=True)
class Opening:
    """A rendezvous dialler's first message: what it wants."""

    kind: OpeningKind
    nameplate: str = ""
    # A newcomer: a member with no link to the share yet (a joiner waiting for the content,
    # or one whose links all dropped). Listeners at their connection bound still let it in
    # (core.mesh.admission), or a late joiner could find every member full of connections
    # to each other and never get the notebook.
    joining: bool = False

    def encode(self) -> bytes:
        if self.kind is OpeningKind.INVITE:
            return _encode({"kind": self.kind.value, "nameplate": self.nameplate})
        if self.joining:
            return _encode({"kind": self.kind.value, "joining": True})
        return _encode({"kind": self.kind.value})

    @classmethod
    def decode(cls, data: bytes) -> Opening:
        message = _object(data, MAX_OPENING_BYTES)
        if "v" not in message:
            raise BadMessage("no version")
        kind = _kind(OpeningKind, message.get("kind"))
        if kind is OpeningKind.INVITE:
            return cls(kind, _nameplate(message.get("nameplate")))
        return cls(kind, joining=message.get("joining") is True)


@dataclass(frozen=True)
class Reply:
    """The listener's answer to an opening: go ahead, or the error the dialler reports."""

    error: str | None = None  # the error's wire name (its class name in version 1)
    # An invitation's host says which invitation handshake it speaks; daemons from before
    # version 2 of it said nothing, so a joiner can tell them at once (older ones ignore it).
    invite_version: int | None = None

    def encode(self) -> bytes:
        if self.error is None and self.invite_version is None:
            return json.dumps({"ok": True}).encode()
        if self.error is None:
            return json.dumps({"ok": True, "invite_version": self.invite_version}).encode()
        return json.dumps({"ok": False, "kind": self.error}).encode()

    @classmethod
    def decode(cls, data: bytes) -> Reply:
        message = _object(data, MAX_OPENING_BYTES)
        ok = message.get("ok")
        if ok is True:
            version = message.get("invite_version")
            if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
                raise BadMessage("'invite_version' is not an int")
            return cls(invite_version=version)
        if ok is not False:
            raise BadMessage("'ok' is not a boolean")
        return cls(_identifier(message.get("kind"), "the error kind", 64))


# --- membership -------------------------------------------------------------------------


def _removals(message: Mapping[str, Any]) -> frozenset[tuple[str, int]]:
    """Daemons removed from a share, each with the generation that removed it."""
    entries = message.get("removed", [])
    if not isinstance(entries, list) or len(entries) > MAX_MEMBERS:
        raise BadMessage(f"'removed' is not a list of at most {MAX_MEMBERS} entries")
    removed: dict[str, int] = {}
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2):
            raise BadMessage("a 'removed' entry is not [id, generation]")
        member = _identifier(entry[0], "a removed member id", MAX_MEMBER_ID_BYTES)
        removed[member] = _generation({"generation": entry[1]})
    return frozenset(removed.items())


def _encode_removals(removed: frozenset[tuple[str, int]]) -> list[list[object]]:
    return [[member, generation] for member, generation in sorted(removed)]


@dataclass(frozen=True)
class Welcome:
    """What the inviter seals to a new member once both proved the code: the share and its
    current key state (so the joiner's own rotations build on it, never below it)."""

    share_id: bytes
    secret: bytes
    name: str
    members: tuple[str, ...]
    generation: int = 0
    removed: frozenset[tuple[str, int]] = frozenset()

    def encode(self) -> bytes:
        return _encode(
            {
                "share_id": self.share_id.hex(),
                "secret": self.secret.hex(),
                "name": self.name,
                "members": list(self.members),
                "generation": self.generation,
                "removed": _encode_removals(self.removed),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Welcome:
        message = _object(data)
        return cls(
            share_id=_hex_bytes(message, "share_id", SHARE_ID_SIZE),
            secret=_hex_bytes(message, "secret", SECRET_SIZE),
            name=check_file_name(message.get("name")),
            members=_members(message),
            generation=_generation(message, default=0),
            removed=_removals(message),
        )


@dataclass(frozen=True)
class Rekey:
    """A share's key state after a rotation (REKEY frame payload): the secret, its
    generation and author, the remaining members and every removal so far.

    ``want_reply`` asks the receiver to answer with its own state after judging this one;
    that answer carries ``reply_to`` (the generation it answers) and ``accepted``. Daemons
    that predate the fields ignore them (they neither ask nor answer).
    """

    secret: bytes
    generation: int
    members: tuple[str, ...]
    removed: frozenset[tuple[str, int]] = frozenset()
    author: str = ""
    want_reply: bool = False
    reply_to: int | None = None
    accepted: bool = False

    def encode(self) -> bytes:
        fields: dict[str, object] = {
            "secret": self.secret.hex(),
            "generation": self.generation,
            "members": list(self.members),
            "removed": _encode_removals(self.removed),
            "author": self.author,
            "want_reply": self.want_reply,
        }
        if self.reply_to is not None:
            fields |= {"reply_to": self.reply_to, "accepted": self.accepted}
        return _encode(fields)

    @classmethod
    def decode(cls, data: bytes) -> Rekey:
        message = _object(data)
        author = message.get("author", "")
        reply_to = message.get("reply_to")
        return cls(
            secret=_hex_bytes(message, "secret", SECRET_SIZE),
            generation=_generation(message),
            members=_members(message),
            removed=_removals(message),
            author=_identifier(author, "the author", MAX_MEMBER_ID_BYTES) if author else "",
            want_reply=message.get("want_reply") is True,
            reply_to=None if reply_to is None else _generation({"generation": reply_to}),
            accepted=message.get("accepted") is True,
        )


# --- discovery --------------------------------------------------------------------------


@dataclass(frozen=True)
class Announcement:
    """This daemon's mDNS TXT record: the nameplates it offers and its shares' tags.

    ``retired`` (TXT ``r``, at most ``MAX_RETIRED_TAGS``, left out when empty: older daemons
    ignore it) tags secrets its shares rotated away, so that a daemon that still holds one
    dials it and is told it was cut off, instead of finding nobody.
    """

    nameplates: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()

    def encode(self) -> dict[str, str]:
        version = str(MESSAGES_VERSION)
        fields = {"v": version, "n": ",".join(self.nameplates), "t": ",".join(self.tags)}
        if self.retired:
            fields["r"] = ",".join(self.retired[:MAX_RETIRED_TAGS])
        return fields

    @classmethod
    def decode(cls, properties: Mapping[str, str]) -> Announcement:
        """Another daemon's TXT record; entries that are not nameplates or tags are dropped."""
        if properties.get("v", str(MESSAGES_VERSION)) != str(MESSAGES_VERSION):
            raise BadMessage(f"version {properties.get('v')!r:.20} of the announcement")
        nameplates = [n for n in properties.get("n", "").split(",") if _NAMEPLATE.fullmatch(n)]
        tags = [t for t in properties.get("t", "").split(",") if _TAG.fullmatch(t)]
        retired = [t for t in properties.get("r", "").split(",") if _TAG.fullmatch(t)]
        return cls(tuple(nameplates), tuple(tags), tuple(retired[:MAX_RETIRED_TAGS]))


class SignalKind(enum.Enum):
    PRESENCE = "presence"  # "I am on this topic" (addressed: an answer to someone's)
    PIPE = "pipe"  # one numbered message of a pipe session


@dataclass(frozen=True)
class SignalMessage:
    """A message on a signaling relay topic, from one relay instance (to one, or to all)."""

    kind: SignalKind
    sender: str
    to: str = ""  # empty: everyone on the topic
    session: str = ""
    number: int = 0
    data: bytes = b""

    def encode(self) -> bytes:
        fields: dict[str, Any] = {"k": self.kind.value, "from": self.sender, "to": self.to}
        if self.kind is SignalKind.PIPE:
            data = base64.b64encode(self.data).decode()
            fields |= {"s": self.session, "n": self.number, "d": data}
        return _encode(fields)

    @classmethod
    def decode(cls, data: bytes) -> SignalMessage:
        message = _object(data)
        if "v" not in message:
            raise BadMessage("no version")
        kind = _kind(SignalKind, message.get("k"))
        sender = _identifier(message.get("from"), "the sender", MAX_INSTANCE_CHARS)
        to = message.get("to")
        if to != "":
            to = _identifier(to, "the recipient", MAX_INSTANCE_CHARS)
        if kind is SignalKind.PRESENCE:
            return cls(kind, sender, to)
        return cls(kind, sender, to, *_pipe_fields(message))


def _pipe_fields(message: Mapping[str, Any]) -> tuple[str, int, bytes]:
    session = _identifier(message.get("s"), "the session", MAX_INSTANCE_CHARS)
    number = _field(message, "n", int)
    if not 0 <= number < MAX_PIPE_NUMBER:
        raise BadMessage("the message number is out of range")
    try:
        data = base64.b64decode(_field(message, "d", str), validate=True)
    except (binascii.Error, ValueError):
        raise BadMessage("'d' is not base64") from None
    return session, number, data

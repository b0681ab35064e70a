"""The room link: a Jupyter collaboration room attached to the daemon's doc of a share.

It runs over the control socket (JSON lines, see `p2prtc/daemon/control.py`) as a stream
request. The Jupyter side opens it with

    {"cmd": "attach", "path": "<absolute file path>", "state_vector": "<b64>", "room": "<label>"}

and the daemon answers `{"ok": true, "share_id": "<hex>", "update": "<b64>", "state_vector":
"<b64>"}`: what the room lacks of the daemon's doc, and the daemon's state vector (the room
then sends what the daemon lacks). From then on both sides send `{"update": "<b64>"}` lines
as their doc changes: one CRDT history, never two that get diffed. `{"awareness": "<b64>"}`
lines carry the rooms' awareness (who is there, their cursors) both ways; it is relayed to
the share's rooms on this machine and on the peers, never stored. The daemon ends the link
with `{"detached": "<reason>"}` when the share is left; either side may simply close it.

Sans-IO: building and reading these messages only.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from p2prtc.errors import P2PError

ATTACH = "attach"


class RoomLinkError(P2PError):
    """A message on the Jupyter room link was malformed."""


@dataclass(frozen=True)
class Update:
    """A Y update for the other side's doc."""

    update: bytes


@dataclass(frozen=True)
class Awareness:
    """An awareness update (y-protocols encoding): who is in the rooms, their cursors. Never
    stored; carried to the rooms of the share on other machines."""

    update: bytes


@dataclass(frozen=True)
class Detached:
    """The daemon ended the link (the share was left, or the daemon stops)."""

    reason: str


RoomMessage = Update | Awareness | Detached


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(message: dict[str, Any], key: str) -> bytes:
    value = message.get(key)
    if not isinstance(value, str):
        raise RoomLinkError(f"no {key!r} string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RoomLinkError(f"{key!r} is not base64") from exc


def attach_request(path: str, state_vector: bytes, label: str) -> dict[str, Any]:
    return {"cmd": ATTACH, "path": path, "state_vector": b64(state_vector), "room": label}


def attach_answer(share_id: bytes, update: bytes, state_vector: bytes) -> dict[str, Any]:
    return {"share_id": share_id.hex(), "update": b64(update), "state_vector": b64(state_vector)}


def update_message(update: bytes) -> dict[str, Any]:
    return {"update": b64(update)}


def awareness_message(update: bytes) -> dict[str, Any]:
    return {"awareness": b64(update)}


def detached_message(reason: str) -> dict[str, Any]:
    return {"detached": reason}


def parse_message(message: dict[str, Any]) -> RoomMessage:
    """One stream line, decoded; raises RoomLinkError for anything else."""
    if "update" in message:
        return Update(unb64(message, "update"))
    if "awareness" in message:
        return Awareness(unb64(message, "awareness"))
    if isinstance(message.get("detached"), str):
        return Detached(message["detached"])
    raise RoomLinkError(f"unknown room message with keys {sorted(message)[:5]}")

"""Daemon names: the human name each daemon goes by (``alice@laptop``), checked as hostile.

A name is what people read in ``status``, ``members``, logs and Jupyter's collaborator list;
ids stay what scripts use. A daemon tells its name to the members it authenticates with, as
one more segment of its handshake identity (``<daemon id>/<run id>/<feature>.../name=<b64>``,
sealed and authenticated by the member handshake). Daemons that predate names ignore the
segment, and a peer that sends none (or one that fails the checks) simply has no name.

A name from the network is printed: it must not be able to forge lines or spoof the terminal,
so it is one to ``MAX_NAME_CHARS`` printable characters (no control, format or line
separator characters, no bidi overrides), without surrounding spaces.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from p2prtc.errors import P2PError

MAX_NAME_CHARS = 64
# Bounds the handshake identity: the base64 of this fits the 255 bytes with room to spare.
MAX_NAME_BYTES = 128
NAME_FEATURE = "name="


class BadName(P2PError):
    """A daemon name is 1 to 64 printable characters, without surrounding spaces."""


def check_name(value: object) -> str:
    """``value`` if it is a valid name; raises BadName saying what is wrong."""
    if not isinstance(value, str) or not value:
        raise BadName("the name is empty")
    if len(value) > MAX_NAME_CHARS or len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise BadName(
            f"the name is longer than {MAX_NAME_CHARS} characters or {MAX_NAME_BYTES} bytes"
        )
    if value != value.strip():
        raise BadName("the name starts or ends with spaces")
    if not value.isprintable():  # also rejects bidi overrides (format) and U+2028 (line sep.)
        raise BadName("the name has control or unprintable characters")
    return value


def default_name(user: str, host: str) -> str:
    """``user@host`` made valid (a hostname with odd bytes still gives a readable name)."""
    cleaned = "".join(c for c in f"{user}@{host}" if c.isprintable()).strip()
    return check_name(cleaned[:MAX_NAME_CHARS].strip())  # never empty: it starts printable


def name_feature(name: str) -> str:
    """The handshake identity segment that carries ``name`` (base64: no ``/`` in it)."""
    encoded = base64.urlsafe_b64encode(check_name(name).encode()).decode().rstrip("=")
    return NAME_FEATURE + encoded


def name_from_features(features: Iterable[str]) -> str | None:
    """The name a peer's identity segments carry; None when absent or not a valid name."""
    for feature in features:
        if feature.startswith(NAME_FEATURE):
            encoded = feature.removeprefix(NAME_FEATURE)
            if len(encoded) > 2 * MAX_NAME_BYTES:
                return None
            try:
                raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
                return check_name(raw.decode("utf-8"))
            except (binascii.Error, ValueError, BadName):
                return None
    return None


def short_label(daemon_id: str, name: str | None) -> str:
    """How people read a daemon: ``alice@laptop [1a2b3c4d]`` (the id's first 8 characters),
    or the short id alone."""
    return f"{name} [{daemon_id[:8]}]" if name else daemon_id[:8]


def label(peer_id: str, name: str | None) -> str:
    """How a log line names a daemon: ``alice@laptop (<id>)``, or the id alone (the full id:
    scripts grep logs for it)."""
    return f"{name} ({peer_id})" if name else peer_id

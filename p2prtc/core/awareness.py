"""Awareness from other machines, marked with the machine's name (sans-IO).

Jupyter rooms share who is there as awareness states (y-protocols encoding: a count, then
per client its id, clock and JSON state). JupyterLab shows a state's ``user.display_name``
(collaborator list, the flag on a remote cursor). A peer's rooms say only who the person is
("Anonymous Io" for a server without login), so the daemon that receives them appends the
peer daemon's name: ``Anonymous Io (alice@laptop)``. The name is the one the peer proved in
its handshake and that core/names.py checked; the rest of each state passes untouched.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pycrdt import Decoder, Encoder

logger = logging.getLogger(__name__)

# Longer display names are cut before the machine's name is appended.
MAX_DISPLAY_NAME_CHARS = 128


def mark_machine(update: bytes, machine: str) -> bytes:
    """``update`` with ``(machine)`` after each user's display name; an update that does not
    decode is returned as it is (the room drops it, as it would have anyway)."""
    try:
        decoder = Decoder(update)
        encoder = Encoder()
        count = decoder.read_var_uint()
        encoder.write_var_uint(count)
        for _ in range(count):
            encoder.write_var_uint(decoder.read_var_uint())  # client id
            encoder.write_var_uint(decoder.read_var_uint())  # clock
            state = json.loads(decoder.read_var_string())
            encoder.write_var_string(json.dumps(_marked(state, machine), separators=(",", ":")))
    except Exception as exc:  # hostile or truncated input: never ours to fix
        logger.debug("awareness update left unmarked: %s", exc)
        return update
    return encoder.to_bytes()


def _marked(state: Any, machine: str) -> Any:
    user = state.get("user") if isinstance(state, dict) else None
    if not isinstance(user, dict):
        return state  # null (the client went) or a state without a user
    shown = user.get("display_name") or user.get("name") or "Anonymous"
    if not isinstance(shown, str):
        return state
    marked = f"{shown[:MAX_DISPLAY_NAME_CHARS]} ({machine})"
    return {**state, "user": {**user, "display_name": marked}}

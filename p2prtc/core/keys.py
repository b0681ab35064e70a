"""Key schedule: everything p2prtc derives from a share secret or a PAKE key (sans-IO).

All derivations are HKDF-SHA256 or HMAC-SHA256 with a distinct ``p2prtc/v1 ...`` label, so no
two uses of a secret ever share a key. Sealing is ChaCha20-Poly1305 with counter nonces, one
key per direction. docs/protocol.md lists every label and output.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

SECRET_SIZE = 32
KEY_SIZE = 32
TAG_HEX_CHARS = 16
TOPIC_HEX_CHARS = 32
DEFAULT_EPOCH_SECONDS = 3600
_LABEL = b"p2prtc/v1 "
_COUNTER_SIZE = 8
_MAX_COUNTER = 2 ** (8 * _COUNTER_SIZE) - 1
# What sealing adds to a message: its counter and the Poly1305 tag.
SEAL_OVERHEAD = _COUNTER_SIZE + 16


class ChannelError(P2PError):
    """A sealed message could not be opened."""


class TamperedMessage(ChannelError):
    """A sealed message was tampered with or sealed under another key."""


class ReplayedMessage(ChannelError):
    """A sealed message was replayed, reordered or dropped."""


def new_secret() -> bytes:
    """A fresh random 32-byte share secret."""
    return secrets.token_bytes(SECRET_SIZE)


def derive(key: bytes, label: str, *, salt: bytes | None = None, length: int = KEY_SIZE) -> bytes:
    """HKDF-SHA256 of ``key`` for the purpose named by ``label`` (prefixed "p2prtc/v1 ")."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=_label(label))
    return hkdf.derive(key)


def mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256."""
    return hmac.new(key, data, hashlib.sha256).digest()


def transcript_hash(*parts: bytes) -> bytes:
    """SHA-256 over length-prefixed parts, so that no two part lists hash alike."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    return digest.digest()


# --- derived from a share secret -------------------------------------------------------------


def member_auth_key(secret: bytes) -> bytes:
    """The key the member handshake proves knowledge of and derives session keys from."""
    return derive(secret, "member auth")


def lookup_tag(secret: bytes, nonce: bytes) -> bytes:
    """The opaque tag by which a member handshake names its share: HMAC of a fresh nonce."""
    return mac(derive(secret, "member lookup"), nonce)


def share_tag(secret: bytes, epoch: int) -> str:
    """The short, rotating tag announcing that a daemon holds the share (mDNS, signaling)."""
    digest = mac(derive(secret, "announce"), epoch.to_bytes(8, "big", signed=True))
    return digest.hex()[:TAG_HEX_CHARS]


def epoch_of(unix_time: float, period: int = DEFAULT_EPOCH_SECONDS) -> int:
    """The announcement epoch a moment falls in (one per hour by default)."""
    return int(unix_time // period)


def matches_share_tag(secret: bytes, tag: str, epoch: int, tolerance: int = 1) -> bool:
    """Whether ``tag`` announces this share within ``tolerance`` epochs (clock skew)."""
    candidates = (share_tag(secret, epoch + delta) for delta in range(-tolerance, tolerance + 1))
    return any(hmac.compare_digest(tag, candidate) for candidate in candidates)


def member_topic(secret: bytes) -> str:
    """The signaling topic on which members of the share meet (hex, no trace of the share)."""
    return derive(secret, "member topic", length=TOPIC_HEX_CHARS // 2).hex()


def invite_topic(nameplate: str) -> str:
    """The signaling topic of an invitation. Namespacing only: nameplates are not secret."""
    return transcript_hash(_label("invite topic"), nameplate.encode("utf-8")).hex()[
        :TOPIC_HEX_CHARS
    ]


# --- sealed channels -------------------------------------------------------------------------


class SealedChannel:
    """Authenticated encryption for one side of a two-way pipe.

    Each direction has its own key and a message counter that doubles as the nonce. A sealed
    message is ``counter:u64 | ciphertext+tag``; ``open`` only accepts the next counter, so a
    replayed, reordered or dropped message raises ReplayedMessage (the pipes are ordered).
    """

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        if send_key == recv_key:
            raise ValueError("the two directions must use different keys")
        self._send = ChaCha20Poly1305(send_key)
        self._recv = ChaCha20Poly1305(recv_key)
        self._send_counter = 0
        self._recv_counter = 0

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Encrypt and authenticate the next outgoing message."""
        if self._send_counter > _MAX_COUNTER:
            raise ChannelError("message counter exhausted")
        counter = self._send_counter.to_bytes(_COUNTER_SIZE, "big")
        self._send_counter += 1
        return counter + self._send.encrypt(_nonce(counter), plaintext, aad)

    def open(self, sealed: bytes, aad: bytes = b"") -> bytes:
        """Decrypt the next incoming message; raise ChannelError if it is not exactly that."""
        counter, ciphertext = sealed[:_COUNTER_SIZE], sealed[_COUNTER_SIZE:]
        if len(counter) < _COUNTER_SIZE:
            raise TamperedMessage("too short")
        try:
            plaintext = self._recv.decrypt(_nonce(counter), ciphertext, aad)
        except InvalidTag:
            raise TamperedMessage() from None
        received = int.from_bytes(counter, "big")
        if received != self._recv_counter:
            raise ReplayedMessage(f"message {received}, expected {self._recv_counter}")
        self._recv_counter += 1
        return plaintext


def session_channel(key: bytes, salt: bytes, purpose: str, *, initiator: bool) -> SealedChannel:
    """One side's SealedChannel for a session keyed by ``key`` and bound to ``salt``.

    The two direction keys are HKDF(key, salt, "<purpose> initiator to responder") and
    "<purpose> responder to initiator"; the initiator seals with the first.
    """
    to_responder = derive(key, f"{purpose} initiator to responder", salt=salt)
    to_initiator = derive(key, f"{purpose} responder to initiator", salt=salt)
    if initiator:
        return SealedChannel(to_responder, to_initiator)
    return SealedChannel(to_initiator, to_responder)


def _nonce(counter: bytes) -> bytes:
    return bytes(12 - _COUNTER_SIZE) + counter


def _label(label: str) -> bytes:
    return _LABEL + label.encode("ascii")

"""The two handshakes between daemons, sans-IO: bytes in, events out, over any ordered pipe.

Every message is ``version:u8 | type:u8 | body``. Neither handshake raises on what the other
side sends: anything unexpected ends it with a ``Failed`` event.

Invitation (``InviteJoiner`` / ``InviteHost``): SPAKE2 on the join code; the joiner proves
the key first, so the host reveals nothing about a guess before the guess is judged (and
counted); the host's sealed welcome then confirms the key the other way::

    joiner -> host   PAKE          spake2_A message
    host -> joiner   PAKE_REPLY    spake2_B message
    joiner -> host   CONFIRM       joiner confirmation MAC
    host -> joiner   WELCOME       sealed welcome payload        (or WRONG_CODE)
    joiner -> host   ACK           sealed empty message

Member authentication (``MemberInitiator`` / ``MemberResponder``), keyed by a share secret::

    initiator -> responder  HELLO   nonce_i | lookup tag = HMAC(lookup key, nonce_i)
    responder -> initiator  PROOF   nonce_r | sealed responder daemon id  (or REJECT)
    initiator -> responder  FINISH  sealed initiator daemon id

Each sealed identity is authenticated over the transcript so far (both nonces, the share id,
and the caller's ``binding``), so it doubles as the transcript MAC. docs/protocol.md has the
key schedule and the reasoning.
"""

from __future__ import annotations

import enum
import hmac
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from spake2 import SPAKE2_A, SPAKE2_B

from p2prtc.core.codes import JoinCode
from p2prtc.core.framing import UnsupportedVersion
from p2prtc.core.keys import (
    SealedChannel,
    derive,
    lookup_tag,
    mac,
    member_auth_key,
    session_channel,
    transcript_hash,
)
from p2prtc.errors import ExitCode, P2PError

logger = logging.getLogger(__name__)

# Invitation messages are at version 2 (joiner confirms first); member messages still at 1.
INVITE_VERSION = 2
MEMBER_VERSION = 1
NONCE_SIZE = 32
_SPAKE_MESSAGE_SIZE = 33  # side byte + compressed Ed25519 element
_MAC_SIZE = 32
_HEADER_SIZE = 2
_MAX_DAEMON_ID_BYTES = 255
_MAX_REFUSAL_BYTES = 64
_JOINER_IDENTITY = b"p2prtc/v1 invite joiner"
_HOST_IDENTITY = b"p2prtc/v1 invite host"
_ZERO_NONCE = bytes(12)


class HandshakeError(P2PError):
    """The handshake with the other daemon failed."""


class WrongCode(P2PError):
    """The join code is wrong."""

    exit_code = ExitCode.CODE_REFUSED


class Refused(P2PError):
    """The inviting daemon refused to answer this join attempt."""

    def __init__(self, kind: str = "") -> None:
        super().__init__()
        self.kind = kind  # the name of the host's error, to be mapped back by the caller


class NotAMember(P2PError):
    """The other daemon could not prove it is a member of this share."""


class MessageType(enum.IntEnum):
    PAKE = 1
    # 2 was the version-1 PAKE_CONFIRM (host confirmation first): retired.
    CONFIRM = 3
    WRONG_CODE = 4
    WELCOME = 5
    ACK = 6
    PAKE_REPLY = 7
    UNSUPPORTED = 8
    REFUSED = 9
    HELLO = 16
    PROOF = 17
    FINISH = 18
    REJECT = 19


class HandshakeState(enum.Enum):
    START = "start"
    AWAIT_PAKE = "await-pake"
    AWAIT_PAKE_REPLY = "await-pake-reply"
    AWAIT_CONFIRM = "await-confirm"
    AWAIT_WELCOME = "await-welcome"
    AWAIT_ACK = "await-ack"
    AWAIT_HELLO = "await-hello"
    AWAIT_PROOF = "await-proof"
    AWAIT_FINISH = "await-finish"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class SendMessage:
    """Send these bytes to the other side (before acting on any later event)."""

    data: bytes


@dataclass(frozen=True)
class Failed:
    """The handshake is over without success; ``str(error)`` is the message for the user."""

    error: P2PError


@dataclass(frozen=True)
class Welcomed:
    """Joiner: the host's welcome payload arrived (and our acknowledgement is on its way)."""

    payload: bytes


@dataclass(frozen=True)
class Joined:
    """Host: the joiner acknowledged the welcome."""


@dataclass(frozen=True)
class Authenticated:
    """Both sides proved membership of ``share_id``; ``channel`` seals what follows."""

    share_id: bytes
    peer_daemon_id: str
    channel: SealedChannel
    # The secret both proved: for a responder, possibly one its share rotated away (see
    # ``share_lookup``), which the daemon answers by telling the peer it was cut off.
    secret: bytes = b""


HandshakeEvent = SendMessage | Failed | Welcomed | Joined | Authenticated
Lookup = Callable[[bytes, bytes], tuple[bytes, bytes] | None]


@dataclass(frozen=True)
class _Message:
    type: MessageType
    body: bytes
    raw: bytes


_Handler = Callable[[_Message], list[HandshakeEvent]]


class _Handshake:
    """The state machine plumbing both handshakes share."""

    def __init__(self, name: str, state: HandshakeState, version: int) -> None:
        self._name = name
        self._state = state
        self._version = version

    @property
    def state(self) -> HandshakeState:
        return self._state

    def receive(self, data: bytes) -> list[HandshakeEvent]:
        """Handle one message from the other side. Never raises on any bytes."""
        if self._state in (HandshakeState.DONE, HandshakeState.FAILED):
            logger.debug("%s: ignoring a message after the handshake ended", self._name)
            return []
        try:
            message = _decode(data, self._version)
            handler = self._handlers().get((self._state, message.type))
            if handler is None:
                raise HandshakeError(f"unexpected {message.type.name} in {self._state.value}")
            return handler(message)
        except UnsupportedVersion as exc:
            # Answered at our version, so the other side's decoder names both versions too.
            return self._fail(exc, self._encode(MessageType.UNSUPPORTED))
        except P2PError as exc:
            return self._fail(exc)

    def _encode(self, message_type: MessageType, body: bytes = b"") -> bytes:
        return _header(self._version, message_type) + body

    def _header(self, message_type: MessageType) -> bytes:
        return _header(self._version, message_type)

    def _handlers(self) -> Mapping[tuple[HandshakeState, MessageType], _Handler]:
        raise NotImplementedError

    def _fail(self, error: P2PError, *notices: bytes) -> list[HandshakeEvent]:
        """End the handshake, after sending ``notices`` that tell the other side why."""
        logger.info("%s failed: %s", self._name, error)
        self._set_state(HandshakeState.FAILED)
        return [*(SendMessage(notice) for notice in notices), Failed(error)]

    def _set_state(self, new: HandshakeState) -> None:
        logger.debug("%s: %s -> %s", self._name, self._state.value, new.value)
        self._state = new

    def _check_start(self, expected: HandshakeState) -> None:
        if self._state is not expected:
            raise RuntimeError(f"{self._name}: start() called in state {self._state.value}")


# --- invitation --------------------------------------------------------------------------------


class _InviteKeys:
    """What both sides derive from the SPAKE2 key and the two PAKE messages."""

    def __init__(self, pake_key: bytes, joiner_message: bytes, host_message: bytes) -> None:
        self._key = pake_key
        self._transcript = transcript_hash(b"p2prtc/v1 invite", joiner_message, host_message)
        self.joiner_confirmation = mac(derive(self._key, "invite joiner confirm"), self._transcript)

    def channel(self, *, joiner: bool) -> SealedChannel:
        return session_channel(self._key, self._transcript, "invite", initiator=joiner)


class InviteJoiner(_Handshake):
    """The joining side of an invitation: proves it knows the code, receives the welcome."""

    def __init__(self, code: JoinCode) -> None:
        super().__init__("invite joiner", HandshakeState.START, INVITE_VERSION)
        self._spake = SPAKE2_A(_password(code), idA=_JOINER_IDENTITY, idB=_HOST_IDENTITY)
        self._pake_message = b""
        self._channel: SealedChannel | None = None

    def start(self) -> list[bytes]:
        """The first message, to send to the host."""
        self._check_start(HandshakeState.START)
        self._pake_message = cast(bytes, self._spake.start())
        self._set_state(HandshakeState.AWAIT_PAKE_REPLY)
        return [self._encode(MessageType.PAKE, self._pake_message)]

    def _handlers(self) -> Mapping[tuple[HandshakeState, MessageType], _Handler]:
        return {
            (HandshakeState.AWAIT_PAKE_REPLY, MessageType.PAKE_REPLY): self._on_pake_reply,
            (HandshakeState.AWAIT_PAKE_REPLY, MessageType.REFUSED): self._on_refused,
            (HandshakeState.AWAIT_WELCOME, MessageType.WELCOME): self._on_welcome,
            (HandshakeState.AWAIT_WELCOME, MessageType.WRONG_CODE): self._on_wrong_code,
        }

    def _on_pake_reply(self, message: _Message) -> list[HandshakeEvent]:
        (host_message,) = _split(message.body, _SPAKE_MESSAGE_SIZE)
        keys = _InviteKeys(
            _finish_pake(self._spake, host_message), self._pake_message, host_message
        )
        self._channel = keys.channel(joiner=True)
        self._set_state(HandshakeState.AWAIT_WELCOME)
        return [SendMessage(self._encode(MessageType.CONFIRM, keys.joiner_confirmation))]

    def _on_welcome(self, message: _Message) -> list[HandshakeEvent]:
        # That the welcome opens is the host's key confirmation.
        channel = _established(self._channel)
        payload = channel.open(message.body, aad=self._header(MessageType.WELCOME))
        ack = self._encode(MessageType.ACK, channel.seal(b"", aad=self._header(MessageType.ACK)))
        self._set_state(HandshakeState.DONE)
        return [SendMessage(ack), Welcomed(payload)]

    def _on_wrong_code(self, message: _Message) -> list[HandshakeEvent]:
        raise WrongCode()

    def _on_refused(self, message: _Message) -> list[HandshakeEvent]:
        kind = message.body[:_MAX_REFUSAL_BYTES].decode("ascii", errors="replace")
        raise Refused(kind)


class InviteHost(_Handshake):
    """The inviting side: checks the joiner knows the code, then hands over ``welcome``.

    ``admit()`` is called before a PAKE message is answered; it raises a ``P2PError`` to
    refuse (the joiner is told the error's class name). ``guessed`` turns true once a PAKE
    message was answered (from then on the exchange is a guess at the code, to be counted
    unless it is proven); ``proven`` once the joiner's confirmation verified (the welcome has
    left).
    """

    def __init__(
        self, code: JoinCode, welcome: bytes, admit: Callable[[], None] = lambda: None
    ) -> None:
        super().__init__("invite host", HandshakeState.AWAIT_PAKE, INVITE_VERSION)
        self._spake = SPAKE2_B(_password(code), idA=_JOINER_IDENTITY, idB=_HOST_IDENTITY)
        self._welcome = welcome
        self._admit = admit
        self._keys: _InviteKeys | None = None
        self._channel: SealedChannel | None = None
        self.guessed = False
        self.proven = False

    def start(self) -> list[bytes]:
        """Nothing to send: the host waits for the joiner's first message."""
        self._check_start(HandshakeState.AWAIT_PAKE)
        return []

    def _handlers(self) -> Mapping[tuple[HandshakeState, MessageType], _Handler]:
        return {
            (HandshakeState.AWAIT_PAKE, MessageType.PAKE): self._on_pake,
            (HandshakeState.AWAIT_CONFIRM, MessageType.CONFIRM): self._on_confirm,
            (HandshakeState.AWAIT_ACK, MessageType.ACK): self._on_ack,
        }

    def _on_pake(self, message: _Message) -> list[HandshakeEvent]:
        (joiner_message,) = _split(message.body, _SPAKE_MESSAGE_SIZE)
        try:
            self._admit()
        except P2PError as exc:
            kind = type(exc).__name__.encode("ascii")[:_MAX_REFUSAL_BYTES]
            return self._fail(exc, self._encode(MessageType.REFUSED, kind))
        host_message = cast(bytes, self._spake.start())
        self._keys = _InviteKeys(
            _finish_pake(self._spake, joiner_message), joiner_message, host_message
        )
        self.guessed = True
        self._set_state(HandshakeState.AWAIT_CONFIRM)
        return [SendMessage(self._encode(MessageType.PAKE_REPLY, host_message))]

    def _on_confirm(self, message: _Message) -> list[HandshakeEvent]:
        keys = self._keys
        assert keys is not None  # set on entering AWAIT_CONFIRM
        if not hmac.compare_digest(message.body, keys.joiner_confirmation):
            return self._fail(WrongCode(), self._encode(MessageType.WRONG_CODE))
        self.proven = True
        self._channel = keys.channel(joiner=False)
        sealed = self._channel.seal(self._welcome, aad=self._header(MessageType.WELCOME))
        self._set_state(HandshakeState.AWAIT_ACK)
        return [SendMessage(self._encode(MessageType.WELCOME, sealed))]

    def _on_ack(self, message: _Message) -> list[HandshakeEvent]:
        _established(self._channel).open(message.body, aad=self._header(MessageType.ACK))
        self._set_state(HandshakeState.DONE)
        return [Joined()]


def _password(code: JoinCode) -> bytes:
    return str(code).encode("ascii")


def _finish_pake(spake: SPAKE2_A | SPAKE2_B, message: bytes) -> bytes:
    try:
        return cast(bytes, spake.finish(message))
    except Exception as exc:  # spake2 raises ValueError or SPAKEError on a bad element
        raise HandshakeError(f"bad PAKE message: {exc!r}") from None


def _established(channel: SealedChannel | None) -> SealedChannel:
    assert channel is not None  # the state machine only reaches here after keying it
    return channel


# --- member authentication ---------------------------------------------------------------------


def share_lookup(
    shares: Mapping[bytes, bytes], retired: Iterable[tuple[bytes, bytes]] = ()
) -> Lookup:
    """A responder ``lookup`` over ``{share_id: secret}``: finds the share a HELLO names.

    ``retired`` lists ``(share_id, secret)`` of secrets rotated away: a daemon still holding
    one (removed, or offline during the rotation) authenticates with it, so that it can be
    told, over the proven channel, that it was cut off. It is never given the share.
    """

    def lookup(nonce: bytes, tag: bytes) -> tuple[bytes, bytes] | None:
        for share_id, secret in [*shares.items(), *retired]:
            if hmac.compare_digest(lookup_tag(secret, nonce), tag):
                return share_id, secret
        return None

    return lookup


class _MemberSession:
    """Keys of one member handshake, derived from a transcript both sides extend alike."""

    def __init__(self, secret: bytes, share_id: bytes, binding: bytes, hello: bytes) -> None:
        self._auth_key = member_auth_key(secret)
        self._transcript = transcript_hash(b"p2prtc/v1 member", share_id, binding, hello)

    def absorb(self, data: bytes) -> None:
        """Fold the next piece of the exchange into the transcript."""
        self._transcript = transcript_hash(self._transcript, data)

    def proof_key(self, role: str) -> bytes:
        """A one-time key bound to everything exchanged so far."""
        return derive(self._auth_key, f"member {role} proof", salt=self._transcript)

    def channel(self, *, initiator: bool) -> SealedChannel:
        return session_channel(self._auth_key, self._transcript, "member", initiator=initiator)


class MemberInitiator(_Handshake):
    """Proves membership of ``share_id`` to a daemon, and checks that it is a member too.

    ``binding`` is authenticated but not sent: both sides must pass the same bytes (e.g. the
    two DTLS fingerprints, in an order both agree on), or b"" over a rendezvous pipe.
    """

    def __init__(
        self, share_id: bytes, secret: bytes, daemon_id: str, binding: bytes = b""
    ) -> None:
        super().__init__("member initiator", HandshakeState.START, MEMBER_VERSION)
        self._share_id = share_id
        self._secret = secret
        self._daemon_id = _check_daemon_id(daemon_id)
        self._binding = binding
        self._session: _MemberSession | None = None

    def start(self) -> list[bytes]:
        """The HELLO message, to send to the responder."""
        self._check_start(HandshakeState.START)
        nonce = secrets.token_bytes(NONCE_SIZE)
        hello = self._encode(MessageType.HELLO, nonce + lookup_tag(self._secret, nonce))
        self._session = _MemberSession(self._secret, self._share_id, self._binding, hello)
        self._set_state(HandshakeState.AWAIT_PROOF)
        return [hello]

    def _handlers(self) -> Mapping[tuple[HandshakeState, MessageType], _Handler]:
        return {
            (HandshakeState.AWAIT_PROOF, MessageType.PROOF): self._on_proof,
            (HandshakeState.AWAIT_PROOF, MessageType.REJECT): self._on_reject,
        }

    def _on_proof(self, message: _Message) -> list[HandshakeEvent]:
        session = self._session
        assert session is not None  # set by start()
        if len(message.body) < NONCE_SIZE:
            raise HandshakeError("PROOF too short")
        session.absorb(message.raw[: _HEADER_SIZE + NONCE_SIZE])
        sealed_id = message.body[NONCE_SIZE:]
        peer_id = _open_identity(session.proof_key("responder"), sealed_id)
        session.absorb(sealed_id)
        finish = self._encode(
            MessageType.FINISH, _seal_identity(session.proof_key("initiator"), self._daemon_id)
        )
        session.absorb(finish)
        channel = session.channel(initiator=True)
        self._set_state(HandshakeState.DONE)
        authenticated = Authenticated(self._share_id, peer_id, channel, self._secret)
        return [SendMessage(finish), authenticated]

    def _on_reject(self, message: _Message) -> list[HandshakeEvent]:
        raise NotAMember("it does not hold this share")


class MemberResponder(_Handshake):
    """Answers a member HELLO: finds the share with ``lookup``, and proves membership back.

    ``lookup(nonce, tag)`` returns ``(share_id, secret)`` of the share whose
    ``keys.lookup_tag(secret, nonce)`` equals ``tag``, or None; see ``share_lookup``.
    """

    def __init__(self, lookup: Lookup, daemon_id: str, binding: bytes = b"") -> None:
        super().__init__("member responder", HandshakeState.AWAIT_HELLO, MEMBER_VERSION)
        self._lookup = lookup
        self._daemon_id = _check_daemon_id(daemon_id)
        self._binding = binding
        self._share_id = b""
        self._secret = b""
        self._session: _MemberSession | None = None

    def start(self) -> list[bytes]:
        """Nothing to send: the responder waits for HELLO."""
        self._check_start(HandshakeState.AWAIT_HELLO)
        return []

    def _handlers(self) -> Mapping[tuple[HandshakeState, MessageType], _Handler]:
        return {
            (HandshakeState.AWAIT_HELLO, MessageType.HELLO): self._on_hello,
            (HandshakeState.AWAIT_FINISH, MessageType.FINISH): self._on_finish,
        }

    def _on_hello(self, message: _Message) -> list[HandshakeEvent]:
        nonce, tag = _split(message.body, NONCE_SIZE, _MAC_SIZE)
        found = self._lookup(nonce, tag)
        if found is None:
            return self._fail(
                NotAMember("no share matches its tag"), self._encode(MessageType.REJECT)
            )
        self._share_id, self._secret = found
        session = _MemberSession(self._secret, self._share_id, self._binding, message.raw)
        self._session = session
        head = self._encode(MessageType.PROOF, secrets.token_bytes(NONCE_SIZE))
        session.absorb(head)
        sealed_id = _seal_identity(session.proof_key("responder"), self._daemon_id)
        session.absorb(sealed_id)
        self._set_state(HandshakeState.AWAIT_FINISH)
        return [SendMessage(head + sealed_id)]

    def _on_finish(self, message: _Message) -> list[HandshakeEvent]:
        session = self._session
        assert session is not None  # set on entering AWAIT_FINISH
        peer_id = _open_identity(session.proof_key("initiator"), message.body)
        session.absorb(message.raw)
        channel = session.channel(initiator=False)
        self._set_state(HandshakeState.DONE)
        return [Authenticated(self._share_id, peer_id, channel, self._secret)]


def _check_daemon_id(daemon_id: str) -> str:
    if len(daemon_id.encode("utf-8")) > _MAX_DAEMON_ID_BYTES:
        raise ValueError(f"daemon ids are at most {_MAX_DAEMON_ID_BYTES} bytes")
    return daemon_id


def _seal_identity(key: bytes, daemon_id: str) -> bytes:
    """Seal a daemon id under a one-time proof key (so a zero nonce is safe)."""
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, daemon_id.encode("utf-8"), None)


def _open_identity(key: bytes, sealed: bytes) -> str:
    """Open a sealed daemon id: that it opens proves the sender knows the share secret."""
    try:
        plaintext = ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, sealed, None)
    except InvalidTag:
        raise NotAMember("its proof does not verify") from None
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise HandshakeError("daemon id is not utf-8") from None


# --- wire format -------------------------------------------------------------------------------


def _header(version: int, message_type: MessageType) -> bytes:
    return bytes((version, message_type))


def _decode(data: bytes, version: int) -> _Message:
    if len(data) < _HEADER_SIZE:
        raise HandshakeError("message shorter than its header")
    if data[0] != version:
        raise UnsupportedVersion(
            f"the other daemon speaks handshake version {data[0]}, this one {version}: "
            "upgrade p2prtc on both machines to the same version"
        )
    try:
        message_type = MessageType(data[1])
    except ValueError:
        raise HandshakeError(f"unknown message type {data[1]}") from None
    return _Message(message_type, data[_HEADER_SIZE:], data)


def _split(body: bytes, *sizes: int) -> tuple[bytes, ...]:
    """Cut ``body`` into fields of exactly these sizes."""
    if len(body) != sum(sizes):
        raise HandshakeError(f"message body of {len(body)} bytes, expected {sum(sizes)}")
    fields: list[bytes] = []
    offset = 0
    for size in sizes:
        fields.append(body[offset : offset + size])
        offset += size
    return tuple(fields)

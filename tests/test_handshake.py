"""Invitation (SPAKE2) and member handshakes: success, wrong secrets, tampering, replay, fuzz."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2prtc.core.codes import JoinCode, parse_code
from p2prtc.core.framing import UnsupportedVersion
from p2prtc.core.handshake import (
    INVITE_VERSION,
    Authenticated,
    Failed,
    HandshakeError,
    HandshakeEvent,
    HandshakeState,
    InviteHost,
    InviteJoiner,
    Joined,
    MemberInitiator,
    MemberResponder,
    MessageType,
    NotAMember,
    Refused,
    SendMessage,
    Welcomed,
    WrongCode,
    share_lookup,
)
from p2prtc.core.keys import TamperedMessage
from p2prtc.errors import P2PError

CODE = parse_code("7-guitar-tornado")
WELCOME = b'{"share": "secret stuff", "members": ["d1"]}'
SHARE = b"S" * 16
SECRET = bytes(range(32))
OTHER_SECRET = bytes(32)
Side = InviteJoiner | InviteHost | MemberInitiator | MemberResponder
Tamper = Callable[[int, bytes], bytes]


def untouched(index: int, message: bytes) -> bytes:
    return message


def run(
    first: Side, second: Side, tamper: Tamper = untouched
) -> tuple[list[HandshakeEvent], list[HandshakeEvent], list[bytes]]:
    """Shuttle messages until both sides are quiet; ``tamper`` sees every message by index."""
    sides = {0: first, 1: second}
    events: dict[int, list[HandshakeEvent]] = {0: [], 1: []}
    wire: list[bytes] = []
    queue = deque((1, message) for message in first.start() + second.start())
    while queue:
        to, message = queue.popleft()
        message = tamper(len(wire), message)
        wire.append(message)
        for event in sides[to].receive(message):
            if isinstance(event, SendMessage):
                queue.append((1 - to, event.data))
            else:
                events[to].append(event)
    return events[0], events[1], wire


def flip(target: int, position: int = -1) -> Tamper:
    def tamper(index: int, message: bytes) -> bytes:
        if index != target:
            return message
        altered = bytearray(message)
        altered[position] ^= 0x01
        return bytes(altered)

    return tamper


def only_error(events: list[HandshakeEvent]) -> P2PError:
    assert len(events) == 1 and isinstance(events[0], Failed), events
    return events[0].error


# --- invitation --------------------------------------------------------------------------------


def test_right_code_delivers_the_welcome_and_the_host_learns_it_arrived() -> None:
    joiner, host = InviteJoiner(CODE), InviteHost(CODE, WELCOME)
    joiner_events, host_events, wire = run(joiner, host)
    assert joiner_events == [Welcomed(WELCOME)]
    assert host_events == [Joined()]
    assert [m[1] for m in wire] == [
        MessageType.PAKE,
        MessageType.PAKE_REPLY,
        MessageType.CONFIRM,
        MessageType.WELCOME,
        MessageType.ACK,
    ]
    assert all(m[0] == INVITE_VERSION for m in wire)
    assert joiner.state is host.state is HandshakeState.DONE
    assert host.guessed and host.proven


def test_codes_typed_differently_are_the_same_secret() -> None:
    joiner = InviteJoiner(parse_code(" 007 Guitar torn "))
    joiner_events, _, _ = run(joiner, InviteHost(CODE, WELCOME))
    assert joiner_events == [Welcomed(WELCOME)]


def test_the_welcome_never_travels_in_clear() -> None:
    _, _, wire = run(InviteJoiner(CODE), InviteHost(CODE, WELCOME))
    assert not any(b"secret stuff" in message for message in wire)
    assert not any(b"guitar" in message for message in wire)


@pytest.mark.parametrize(
    "other_code",
    [JoinCode("7", ("guitar", "tiger")), JoinCode("8", ("guitar", "tornado"))],
)
def test_wrong_code_fails_on_both_sides_with_wrong_code(other_code: JoinCode) -> None:
    joiner_events, host_events, wire = run(InviteJoiner(other_code), InviteHost(CODE, WELCOME))
    for events in (joiner_events, host_events):
        error = only_error(events)
        assert isinstance(error, WrongCode)
        assert str(error) == "The join code is wrong."
    assert wire[-1][1] == MessageType.WRONG_CODE  # the host told the joiner
    assert not any(WELCOME in message for message in wire)


def test_the_host_reveals_nothing_about_a_guess_before_judging_it() -> None:
    """Its only answer before the joiner's confirmation is its SPAKE2 message: no MAC, no
    ciphertext, nothing keyed by the session key that a guess could be tested against."""
    for code in (CODE, JoinCode("7", ("apple", "zebra"))):
        host = InviteHost(CODE, WELCOME)
        host.start()
        (reply,) = host.receive(InviteJoiner(code).start()[0])
        assert isinstance(reply, SendMessage)
        assert reply.data[1] == MessageType.PAKE_REPLY and len(reply.data) == 2 + 33
        assert host.guessed and not host.proven  # from here on, walking away is a guess


def test_a_refused_guess_is_never_answered() -> None:
    def no_budget() -> None:
        raise WrongCode()

    joiner, host = InviteJoiner(CODE), InviteHost(CODE, WELCOME, admit=no_budget)
    joiner_events, host_events, wire = run(joiner, host)
    refused = only_error(joiner_events)
    assert isinstance(refused, Refused) and refused.kind == "WrongCode"
    assert isinstance(only_error(host_events), WrongCode)
    assert [m[1] for m in wire] == [MessageType.PAKE, MessageType.REFUSED]
    assert not host.guessed


def test_host_detects_a_bad_confirmation_by_itself() -> None:
    host = InviteHost(CODE, WELCOME)
    joiner = InviteJoiner(JoinCode("7", ("apple", "zebra")))
    host.start()
    (pake_reply,) = host.receive(joiner.start()[0])
    assert isinstance(pake_reply, SendMessage)
    # A forged confirmation gets the WRONG_CODE notice and nothing else.
    notice, failed = host.receive(bytes([INVITE_VERSION, MessageType.CONFIRM]) + bytes(32))
    assert notice == SendMessage(bytes([INVITE_VERSION, MessageType.WRONG_CODE]))
    assert isinstance(failed, Failed) and isinstance(failed.error, WrongCode)
    assert host.guessed and not host.proven
    assert host.receive(b"anything") == []


def substitute_pake(index: int, message: bytes) -> bytes:
    """Swap the joiner's PAKE message for a valid one made with another code."""
    return InviteJoiner(JoinCode("7", ("apple", "zebra"))).start()[0] if index == 0 else message


def substitute_reply(index: int, message: bytes) -> bytes:
    """Swap the host's PAKE reply for one from another session of the same code."""
    if index != 1:
        return message
    other = InviteHost(CODE, WELCOME)
    (reply,) = other.receive(InviteJoiner(CODE).start()[0])
    assert isinstance(reply, SendMessage)
    return reply.data


def outcome(events: list[HandshakeEvent]) -> list[type]:
    return [type(e.error) if isinstance(e, Failed) else type(e) for e in events]


@pytest.mark.parametrize(
    ("tamper", "joiner_outcome", "host_outcome"),
    [
        (substitute_pake, [WrongCode], [WrongCode]),  # keys disagree: seen as a wrong code
        (flip(0, 2), [], [HandshakeError]),  # PAKE side byte: refused before any crypto
        (substitute_reply, [WrongCode], [WrongCode]),  # another host's PAKE message
        (flip(1, 2), [HandshakeError], []),  # its side byte: the host waits, and will count it
        (flip(2), [WrongCode], [WrongCode]),  # joiner confirmation
        (flip(3), [TamperedMessage], []),  # sealed welcome: the host waits for an ack
        (flip(4), [Welcomed], [TamperedMessage]),  # sealed ack: the joiner was already done
    ],
)
def test_tampering_with_any_invitation_message_fails(
    tamper: Tamper, joiner_outcome: list[type], host_outcome: list[type]
) -> None:
    joiner_events, host_events, _ = run(InviteJoiner(CODE), InviteHost(CODE, WELCOME), tamper)
    assert outcome(joiner_events) == joiner_outcome
    assert outcome(host_events) == host_outcome


def test_replayed_invitation_messages_fail() -> None:
    _, _, old = run(InviteJoiner(CODE), InviteHost(CODE, WELCOME))
    # An old joiner confirmation does not convince a new host.
    host = InviteHost(CODE, WELCOME)
    host.receive(old[0])
    notice, failed = host.receive(old[2])
    assert notice == SendMessage(bytes([INVITE_VERSION, MessageType.WRONG_CODE]))
    assert isinstance(failed, Failed) and isinstance(failed.error, WrongCode)
    # An old host reply keys a new joiner to nothing the old welcome opens under.
    joiner = InviteJoiner(CODE)
    joiner.start()
    (confirm,) = joiner.receive(old[1])
    assert isinstance(confirm, SendMessage) and confirm.data != old[2]
    assert isinstance(only_error(joiner.receive(old[3])), TamperedMessage)
    # An old welcome does not open under a new session's keys.
    joiner, host = InviteJoiner(CODE), InviteHost(CODE, WELCOME)
    (reply,) = host.receive(joiner.start()[0])
    assert isinstance(reply, SendMessage)
    (confirm,) = joiner.receive(reply.data)
    assert isinstance(confirm, SendMessage)
    assert isinstance(only_error(joiner.receive(old[3])), TamperedMessage)


def test_out_of_order_invitation_messages_fail() -> None:
    _, _, old = run(InviteJoiner(CODE), InviteHost(CODE, WELCOME))
    host = InviteHost(CODE, WELCOME)
    error = only_error(host.receive(old[2]))
    assert isinstance(error, HandshakeError) and "unexpected CONFIRM" in str(error)
    assert not host.guessed
    joiner = InviteJoiner(CODE)
    joiner.start()
    assert isinstance(only_error(joiner.receive(old[3])), HandshakeError)
    assert isinstance(only_error(InviteJoiner(CODE).receive(old[1])), HandshakeError)


def test_reflected_pake_message_is_rejected() -> None:
    joiner = InviteJoiner(CODE)
    (pake,) = joiner.start()
    reflected = bytes([INVITE_VERSION, MessageType.PAKE_REPLY]) + pake[2:]
    error = only_error(joiner.receive(reflected))
    assert isinstance(error, HandshakeError) and "bad PAKE message" in str(error)


def test_a_peer_on_another_version_is_told_and_named() -> None:
    joiner = InviteJoiner(CODE)
    (pake,) = joiner.start()
    host = InviteHost(CODE, WELCOME)
    notice, failed = host.receive(b"\x01" + pake[1:])
    assert isinstance(failed, Failed) and isinstance(failed.error, UnsupportedVersion)
    assert "version 1, this one 2" in str(failed.error)
    # Sent at our version, so an older daemon's decoder names both versions as well.
    assert notice == SendMessage(bytes([INVITE_VERSION, MessageType.UNSUPPORTED]))
    assert not host.guessed


def test_start_twice_is_a_programming_error() -> None:
    joiner = InviteJoiner(CODE)
    joiner.start()
    with pytest.raises(RuntimeError):
        joiner.start()


# --- member authentication ---------------------------------------------------------------------


def member_pair(
    initiator_secret: bytes = SECRET,
    shares: dict[bytes, bytes] | None = None,
    binding: tuple[bytes, bytes] = (b"", b""),
) -> tuple[MemberInitiator, MemberResponder]:
    shares = {b"X" * 16: OTHER_SECRET, SHARE: SECRET} if shares is None else shares
    return (
        MemberInitiator(SHARE, initiator_secret, "daemon-i", binding=binding[0]),
        MemberResponder(share_lookup(shares), "daemon-r", binding=binding[1]),
    )


def test_a_secret_rotated_away_still_authenticates_and_says_so() -> None:
    """A daemon holding a retired secret gets through, so that it can be told; the
    responder learns which secret it proved."""
    retired = [(SHARE, OTHER_SECRET)]
    initiator = MemberInitiator(SHARE, OTHER_SECRET, "daemon-i")
    responder = MemberResponder(share_lookup({SHARE: SECRET}, retired), "daemon-r")
    initiator_events, responder_events, _ = run(initiator, responder)
    assert authenticated(responder_events).secret == OTHER_SECRET
    assert authenticated(initiator_events).secret == OTHER_SECRET
    current = MemberResponder(share_lookup({SHARE: SECRET}, retired), "daemon-r")
    _, responder_events, _ = run(MemberInitiator(SHARE, SECRET, "daemon-i"), current)
    assert authenticated(responder_events).secret == SECRET


def authenticated(events: list[HandshakeEvent]) -> Authenticated:
    assert len(events) == 1 and isinstance(events[0], Authenticated), events
    return events[0]


@pytest.mark.parametrize("binding", [b"", b"fp-offer|fp-answer"])
def test_members_authenticate_and_get_matching_channels(binding: bytes) -> None:
    initiator, responder = member_pair(binding=(binding, binding))
    initiator_events, responder_events, wire = run(initiator, responder)
    mine, theirs = authenticated(initiator_events), authenticated(responder_events)
    assert (mine.share_id, mine.peer_daemon_id) == (SHARE, "daemon-r")
    assert (theirs.share_id, theirs.peer_daemon_id) == (SHARE, "daemon-i")
    assert theirs.channel.open(mine.channel.seal(b"offer")) == b"offer"
    assert mine.channel.open(theirs.channel.seal(b"answer")) == b"answer"
    assert [m[1] for m in wire] == [MessageType.HELLO, MessageType.PROOF, MessageType.FINISH]
    # Observers learn neither the share nor who is talking.
    assert not any(SHARE in m or b"daemon-" in m for m in wire)


def test_sessions_differ_each_time() -> None:
    first, _, wire1 = run(*member_pair())
    second, _, wire2 = run(*member_pair())
    assert wire1[0] != wire2[0] and wire1[1] != wire2[1]
    with pytest.raises(TamperedMessage):
        authenticated(second).channel.open(authenticated(first).channel.seal(b"x"))


def test_wrong_secret_is_rejected_and_the_initiator_is_told() -> None:
    initiator_events, responder_events, wire = run(*member_pair(initiator_secret=b"\x07" * 32))
    assert isinstance(only_error(responder_events), NotAMember)
    error = only_error(initiator_events)
    assert isinstance(error, NotAMember)
    assert str(error).startswith("The other daemon could not prove it is a member of this share.")
    assert wire[-1][1] == MessageType.REJECT


def test_impostor_responder_fails_the_initiator() -> None:
    """A responder that claims the share without knowing its secret cannot prove it."""
    impostor = MemberResponder(lambda nonce, tag: (SHARE, OTHER_SECRET), "evil")
    initiator_events, responder_events, _ = run(member_pair()[0], impostor)
    assert isinstance(only_error(initiator_events), NotAMember)
    assert responder_events == []


def test_binding_mismatch_fails() -> None:
    initiator_events, _, _ = run(*member_pair(binding=(b"fp-a", b"fp-mitm")))
    assert isinstance(only_error(initiator_events), NotAMember)


def test_replayed_hello_and_finish_fail_at_the_responder() -> None:
    _, _, old = run(*member_pair())
    responder = member_pair()[1]
    (proof,) = responder.receive(old[0])
    assert isinstance(proof, SendMessage)  # a replayed HELLO gets a fresh challenge...
    assert isinstance(only_error(responder.receive(old[2])), NotAMember)  # ...it cannot answer


def test_replayed_proof_fails_at_the_initiator() -> None:
    _, _, old = run(*member_pair())
    initiator = member_pair()[0]
    initiator.start()
    assert isinstance(only_error(initiator.receive(old[1])), NotAMember)


@pytest.mark.parametrize(("target", "position"), [(0, 5), (0, -1), (1, 5), (1, -1), (2, -1)])
def test_tampering_with_member_messages_fails(target: int, position: int) -> None:
    initiator_events, responder_events, _ = run(*member_pair(), tamper=flip(target, position))
    failures = [e for e in initiator_events + responder_events if isinstance(e, Failed)]
    assert failures and all(isinstance(f.error, NotAMember) for f in failures)
    assert not (
        any(isinstance(e, Authenticated) for e in initiator_events)
        and any(isinstance(e, Authenticated) for e in responder_events)
    )


def test_reordered_member_messages_fail() -> None:
    _, _, old = run(*member_pair())
    assert isinstance(only_error(member_pair()[1].receive(old[2])), HandshakeError)
    assert isinstance(
        only_error(MemberInitiator(SHARE, SECRET, "d").receive(old[1])), HandshakeError
    )


def test_daemon_ids_are_bounded() -> None:
    with pytest.raises(ValueError):
        MemberInitiator(SHARE, SECRET, "x" * 256)


# --- fuzz --------------------------------------------------------------------------------------


def fresh_sides() -> list[Side]:
    """One handshake side in every state that waits for a message."""
    joiner_waiting_welcome, host_waiting_ack = InviteJoiner(CODE), InviteHost(CODE, WELCOME)
    for event in host_waiting_ack.receive(joiner_waiting_welcome.start()[0]):
        if isinstance(event, SendMessage):
            (confirm,) = joiner_waiting_welcome.receive(event.data)
            assert isinstance(confirm, SendMessage)
            host_waiting_ack.receive(confirm.data)
    joiner_waiting_pake = InviteJoiner(CODE)
    joiner_waiting_pake.start()
    initiator = MemberInitiator(SHARE, SECRET, "i")
    hello = initiator.start()[0]
    responder_waiting_finish = member_pair()[1]
    responder_waiting_finish.receive(hello)
    return [
        joiner_waiting_pake,
        joiner_waiting_welcome,
        InviteHost(CODE, WELCOME),
        host_waiting_ack,
        initiator,
        member_pair()[1],
        responder_waiting_finish,
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=120),
        # bodies of the exact sizes the handshakes expect, so they reach the crypto
        *(st.binary(min_size=size, max_size=size) for size in (32, 33, 64, 65)),
        st.binary(min_size=32, max_size=32).map(lambda point: b"A" + point),
        st.binary(min_size=64, max_size=64).map(lambda rest: b"B" + rest),
    ),
    st.sampled_from(list(MessageType)),
)
def test_random_bytes_never_raise(noise: bytes, message_type: MessageType) -> None:
    for side in fresh_sides():
        for data in (noise, bytes([1, message_type]) + noise):
            events = side.receive(data)
            assert all(isinstance(e, (SendMessage, Failed)) for e in events)
            if any(isinstance(e, Failed) for e in events):
                assert side.state is HandshakeState.FAILED

"""Security properties of real daemons (issue 4); the threat model is docs/security.md.

Real daemons with separate homes, driven through the CLI, on loopback (static peers, no
mDNS) or, for mDNS, inside namespaces this test creates. The attacker is a test-only
WebSocket relay (tests/mitm_proxy.py) that the joiner dials instead of the sharer, or a
multicast listener on the LAN (tests/mdns_capture.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from daemons import LOOPBACK_ENV, SAMPLE, Node, copy_notebook, edit_cell, loopback_nodes, wait_until
from guesser import RelayGuesser, WalkAway, guess, lan_opener, wrong_code
from joins import another_code
from mdns_capture import SERVICE_TYPE, parse_packet, txt_properties
from mitm_proxy import (
    LOOPBACK,
    MEMBER_SEALED_ANSWER,
    MEMBER_SEALED_OFFER,
    Direction,
    MitmProxy,
    Relayed,
    flip_last_bit,
    rendezvous_url,
    replay_dialler,
)
from netns import NetnsLab

from p2prtc.adapters.ice import IceConfig
from p2prtc.adapters.rendezvous import connect_pipe
from p2prtc.adapters.webrtc import PeerLink, make_offer
from p2prtc.adapters.webrtc_lifecycle import LinkState
from p2prtc.core.handshake import INVITE_VERSION, MessageType
from p2prtc.core.keys import (
    SealedChannel,
    epoch_of,
    invite_topic,
    matches_share_tag,
    member_topic,
)
from p2prtc.daemon.dialer import RECONCILE_INTERVAL_S
from p2prtc.daemon.invitations import CodeBurned
from p2prtc.daemon.pipes import envelope, expect_ok

pytestmark = pytest.mark.timeout(90)

NOTEBOOK_NAME = "acquisition-plans-q3.ipynb"
MARKER = "MARKER-7c1f3e confidential revenue forecast"  # text only the notebook contains
CAPTURE_AGENT = Path(__file__).with_name("mdns_capture.py")
# Long enough for several dial attempts (backoff 1 s, 2 s...), short enough to keep it fast.
TAMPERED_JOIN_TIMEOUT_S = "3"
REPLAY_TIMEOUT_S = 10.0
# A sharer whose sealed answer was spoilt waits for its WebRTC link to open (15 s), and
# `p2prtc stop` waits for that; teardown kills it sooner.
SHUTDOWN_TIMEOUT_S = 3.0

WRONG_CODE = "p2prtc: The join code is wrong."
EXPIRED = "p2prtc: This join code has expired; ask for a new one (p2prtc invite)."
BURNED = "p2prtc: This join code was cancelled after too many wrong attempts; ask for a new one."
JOIN_TIMED_OUT = "p2prtc: No member of the share could be reached to sync the notebook"
TAMPERED = "A sealed message was tampered with or sealed under another key."
NOT_A_MEMBER = "The other daemon could not prove it is a member of this share."


# --- fixtures and helpers -----------------------------------------------------------------


def make_node(root: Path, name: str) -> Node:
    (node,) = loopback_nodes(root, name)
    return node


def distinctive_notebook(notebooks_dir: Path, folder: Path) -> Path:
    """A real notebook with a telling name and a line of text found nowhere else."""
    notebook = copy_notebook(notebooks_dir / SAMPLE, folder / NOTEBOOK_NAME)
    edit_cell(notebook, 0, MARKER)
    return notebook


def rendezvous_port(node: Node) -> int:
    return int(node.status()["daemon"]["rendezvous_port"])


def dial_directly(joiner: Node, port: int) -> None:
    joiner.env["P2PRTC_PEERS"] = f"{LOOPBACK}:{port}"


def share_record(node: Node) -> dict[str, Any]:
    (record_file,) = (node.home / "shares").glob("*/share.json")
    record: dict[str, Any] = json.loads(record_file.read_text())
    return record


def secret_values(record: dict[str, Any]) -> dict[str, bytes]:
    """A share's secret in every form it could leak in."""
    return {
        "secret bytes": bytes.fromhex(record["secret"]),
        "secret hex": record["secret"].lower().encode(),
        "secret HEX": record["secret"].upper().encode(),
    }


def sensitive_values(record: dict[str, Any]) -> dict[str, bytes]:
    """What no observer may see: names, content, the share id and the secret, in any form."""
    return {
        "file name": NOTEBOOK_NAME.encode(),
        "file stem": Path(NOTEBOOK_NAME).stem.encode(),
        "notebook text": MARKER.encode(),
        "share id bytes": bytes.fromhex(record["share_id"]),
        "share id hex": record["share_id"].lower().encode(),
        "share id HEX": record["share_id"].upper().encode(),
        **secret_values(record),
    }


def leaked(blob: bytes, sensitive: dict[str, bytes]) -> list[str]:
    return [what for what, value in sensitive.items() if value in blob]


def invitation_of(node: Node, code: str) -> dict[str, Any] | None:
    """The open invitation of ``code`` as the sharer's status shows it (None: none open)."""
    (share,) = node.status()["shares"]
    nameplate = code.split("-")[0]
    found = [i for i in share["invitations"] if i["nameplate"] == nameplate]
    return found[0] if found else None


def wrong_attempts_left(node: Node, code: str) -> int | None:
    invitation = invitation_of(node, code)
    return None if invitation is None else int(invitation["wrong_attempts_left"])


def wait_for_attempts_left(node: Node, code: str, count: int | None) -> None:
    """Until the invitation of ``code`` has ``count`` wrong attempts left (None: withdrawn)."""
    seen: list[int | None] = []

    def reached() -> bool:
        seen.append(wrong_attempts_left(node, code))
        return seen[-1] == count

    try:
        wait_until(reached, what=f"{count} wrong attempts left")
    except pytest.fail.Exception:
        pytest.fail(f"waited for {count} wrong attempts left, saw {seen}\n{node.log_tail()}")


def log_of(node: Node, since: int = 0) -> str:
    """The daemon's log, from character ``since`` on (a test's own part of a shared log)."""
    return (node.home / "daemon.log").read_text(errors="replace")[since:]


@dataclass
class Sharer:
    """A daemon sharing a distinctive notebook; each test takes its own invitation."""

    node: Node
    notebook: Path

    def invite(self, *options: str) -> str:
        return str(self.node.json("invite", str(self.notebook), *options)["code"])

    def peer_ids(self) -> list[str]:
        (share,) = self.node.status()["shares"]
        return [peer["id"] for peer in share["peers"]]


@pytest.fixture(scope="module")
def sharer(tmp_path_factory: pytest.TempPathFactory, notebooks_dir: Path) -> Iterator[Sharer]:
    a = make_node(tmp_path_factory.mktemp("sharer"), "a")
    notebook = distinctive_notebook(notebooks_dir, a.workdir)
    try:
        a.share(notebook)  # the code it prints is never used
        yield Sharer(a, notebook)
    finally:
        a.shut_down(SHUTDOWN_TIMEOUT_S)


@pytest.fixture
def joiner(tmp_path: Path) -> Iterator[Node]:
    """A fresh daemon home (no daemon running yet)."""
    b = make_node(tmp_path, "b")
    try:
        yield b
    finally:
        b.shut_down(SHUTDOWN_TIMEOUT_S)


# --- join codes ---------------------------------------------------------------------------


def test_wrong_codes_are_seen_by_the_sharer_and_burn_the_code(sharer: Sharer, joiner: Node) -> None:
    a, b = sharer.node, joiner
    code, log_start = sharer.invite(), len(log_of(a))
    dial_directly(b, rendezvous_port(a))

    # The sharer judges each confirmation and tells the joiner; the attempt is settled when
    # the exchange ends, which may be just after the joiner's command returned; the third
    # one withdraws the invitation (None).
    for attempts_left in (2, 1, None):
        result = b.run("join", another_code(code), "--timeout", "5", check=False)
        assert (result.returncode, result.stderr.strip()) == (4, WRONG_CODE)
        wait_for_attempts_left(a, code, attempts_left)
    log = log_of(a, log_start)
    assert len([line for line in log.splitlines() if "ended: The join code is wrong" in line]) == 3
    assert "burned after 3 failed attempts" in log

    # Burned: even the right code is refused now, and nothing was handed out.
    result = b.run("join", code, "--timeout", "1", check=False)
    assert result.returncode == 4
    assert result.stderr.strip() == BURNED
    assert b.status()["shares"] == []
    assert not (b.workdir / NOTEBOOK_NAME).exists()


def test_expired_code_is_refused(sharer: Sharer, joiner: Node) -> None:
    a, b = sharer.node, joiner
    answer = a.json("invite", str(sharer.notebook), "--expires", "0.01")  # minutes: 0.6 s
    dial_directly(b, rendezvous_port(a))
    time.sleep(max(0.0, answer["expires_at"] - time.time()) + 0.1)

    result = b.run("join", answer["code"], "--timeout", "1", check=False)

    assert result.returncode == 4
    assert result.stderr.strip() == EXPIRED
    assert b.status()["shares"] == []
    assert not (b.workdir / NOTEBOOK_NAME).exists()
    assert invitation_of(a, answer["code"]) is None


async def abandon_invitation_pipe(port: int, nameplate: str, seconds: float) -> None:
    """Open a join for ``nameplate`` and let it hang for ``seconds`` without a PAKE message."""
    pipe = await connect_pipe(LOOPBACK, port, REPLAY_TIMEOUT_S)
    try:
        await pipe.send(envelope("invite", nameplate=nameplate))
        await expect_ok(pipe)
        await asyncio.sleep(seconds)
    finally:
        await pipe.close()


def test_a_join_abandoned_before_any_guess_leaves_the_code_usable(
    sharer: Sharer, joiner: Node
) -> None:
    """No PAKE message, no guess: a slow or dropped joiner costs no attempt."""
    a, b, code = sharer.node, joiner, sharer.invite()
    port = rendezvous_port(a)
    # Held across a tick of the daemon's housekeeping, as a slow or dropped joiner would.
    asyncio.run(abandon_invitation_pipe(port, code.split("-")[0], 2 * RECONCILE_INTERVAL_S))
    assert wrong_attempts_left(a, code) == 3
    dial_directly(b, port)

    assert Path(b.join(code, None, "--timeout", "3")["path"]).exists()


def assert_burned_by_guesses(sharer: Sharer, joiner: Node, code: str, log_start: int) -> None:
    """The sharer saw three failed exchanges, burned the code and says so; the right code
    is then refused as burned and nothing was handed out."""
    a = sharer.node
    wait_for_attempts_left(a, code, None)
    (share,) = a.status()["shares"]
    nameplate = code.split("-")[0]
    assert {"nameplate": nameplate, "reason": "burned", "wrong_attempts_used": 3} in share[
        "retired_invitations"
    ]
    assert f"invitation {nameplate}-… burned after 3 failed attempts" in a.run("status").stdout
    warnings = [
        line
        for line in log_of(a, log_start).splitlines()
        if " WARNING " in line and "did not prove the code" in line
    ]
    assert len(warnings) == 3, warnings
    result = joiner.run("join", code, "--timeout", "5", check=False)
    assert (result.returncode, result.stderr.strip()) == (4, BURNED)
    assert joiner.status()["shares"] == []


def test_a_guesser_that_walks_away_after_the_answer_burns_the_code(
    sharer: Sharer, joiner: Node
) -> None:
    """Issue 10: each guess costs an attempt however the guesser leaves (LAN pipe)."""
    code, log_start = sharer.invite(), len(log_of(sharer.node))
    port = rendezvous_port(sharer.node)
    dial_directly(joiner, port)
    for how in (WalkAway.CLOSE, WalkAway.JUNK, WalkAway.OUT_OF_ORDER):
        answer = asyncio.run(guess(lan_opener(LOOPBACK, port), wrong_code(code), how, 0.2))
        assert answer[1] == MessageType.PAKE_REPLY  # only the SPAKE2 message: no verdict
    # Once those three are settled, a fourth guess is not even answered.
    wait_for_attempts_left(sharer.node, code, None)
    with pytest.raises(CodeBurned):
        asyncio.run(guess(lan_opener(LOOPBACK, port), wrong_code(code), WalkAway.CLOSE, 0))
    assert_burned_by_guesses(sharer, joiner, code, log_start)


async def guess_through_relay(url: str, code: str, guesses: int) -> list[bytes]:
    """``guesses`` concurrent guesses over the relay, each left to the host's timeout."""
    guesser = RelayGuesser(url, code.split("-")[0])
    try:
        opener = guesser.opener(await guesser.find_host())
        return await asyncio.gather(
            *(guess(opener, wrong_code(code), WalkAway.SILENCE, 0) for _ in range(guesses))
        )
    finally:
        await guesser.hub.close()


def test_concurrent_guesses_through_a_relay_cannot_exceed_the_budget(
    tmp_path: Path, notebooks_dir: Path, signaling_server: str
) -> None:
    """Five guesses at once over the relay pipe on a 5-use code, each abandoned to the host's
    timeout: three are answered (and counted), two refused unanswered; the code is burned."""
    env = {**LOOPBACK_ENV, "P2PRTC_SIGNAL": signaling_server}
    a = Node(tmp_path / "a" / "home", tmp_path / "a", dict(env))
    b = Node(tmp_path / "b" / "home", tmp_path / "b", dict(env))
    a.workdir.mkdir(parents=True)
    b.workdir.mkdir(parents=True)
    try:
        sharer = Sharer(a, distinctive_notebook(notebooks_dir, a.workdir))
        a.share(sharer.notebook)
        code, log_start = sharer.invite("--uses", "5"), len(log_of(a))
        answers = asyncio.run(guess_through_relay(signaling_server, code, 5))
        replies = [answer for answer in answers if answer[1] == MessageType.PAKE_REPLY]
        refusals = [answer[2:] for answer in answers if answer[1] == MessageType.REFUSED]
        assert (len(replies), refusals) == (3, [b"CodeBusy"] * 2), answers
        assert_burned_by_guesses(sharer, b, code, log_start)
    finally:
        a.shut_down(SHUTDOWN_TIMEOUT_S)
        b.shut_down(SHUTDOWN_TIMEOUT_S)


# --- a man in the middle on the rendezvous --------------------------------------------------


@dataclass
class ForgedOffer:
    """Replaces the joiner's sealed offer with the proxy's own SDP, sealed under a key it
    made up (it cannot know the real one): a relay trying to be the sharer's WebRTC peer."""

    links: list[PeerLink] = field(default_factory=list)
    acted: int = 0

    async def __call__(self, message: Relayed) -> bytes:
        if not message.is_member(MEMBER_SEALED_OFFER):
            return message.data
        link, sdp = await make_offer(IceConfig(host_addresses=[LOOPBACK]))
        self.links.append(link)
        self.acted += 1
        return SealedChannel(secrets.token_bytes(32), secrets.token_bytes(32)).seal(sdp.encode())


@dataclass
class StaleOffer:
    """Swaps in a genuine sealed offer of the joiner, captured from an earlier handshake (the
    first one, spoilt so that it fails): right sender, right format, another session."""

    captured: bytes = b""
    acted: int = 0
    links: list[PeerLink] = field(default_factory=list)

    async def __call__(self, message: Relayed) -> bytes:
        if not message.is_member(MEMBER_SEALED_OFFER):
            return message.data
        self.acted += 1
        if not self.captured:
            self.captured = message.data
            return flip_last_bit(message.data)
        return self.captured


@dataclass
class FlippedAnswer:
    """Flips one bit of the sharer's sealed answer (e.g. to change a DTLS fingerprint)."""

    acted: int = 0
    links: list[PeerLink] = field(default_factory=list)

    async def __call__(self, message: Relayed) -> bytes:
        if not message.is_member(MEMBER_SEALED_ANSWER):
            return message.data
        self.acted += 1
        return flip_last_bit(message.data)


Attack = ForgedOffer | StaleOffer | FlippedAnswer


@pytest.mark.parametrize(
    ("attack", "victim"),
    [(ForgedOffer, "sharer"), (StaleOffer, "sharer"), (FlippedAnswer, "joiner")],
    ids=["forged-offer", "stale-offer", "flipped-answer"],
)
def test_man_in_the_middle_gets_no_connection_and_no_data(
    sharer: Sharer, joiner: Node, attack: type[Attack], victim: str
) -> None:
    a, b = sharer.node, joiner
    code, log_start = sharer.invite(), len(log_of(a))
    tamper = attack()
    with MitmProxy(rendezvous_url(rendezvous_port(a)), tamper) as proxy:
        dial_directly(b, proxy.port)
        result = b.run("join", code, "--timeout", TAMPERED_JOIN_TIMEOUT_S, check=False)
        try:
            assert result.returncode != 0
            assert result.stderr.startswith(JOIN_TIMED_OUT), result.stderr
            assert tamper.acted >= (2 if attack is StaleOffer else 1)
            assert not (b.workdir / NOTEBOOK_NAME).exists()
            joiner_status = b.status()
            assert joiner_status["shares"][0]["peers"] == []
            assert joiner_status["daemon"]["id"] not in sharer.peer_ids()
            assert all(link.state is not LinkState.OPEN for link in tamper.links)
            # The daemon that received the tampered message says so.
            assert TAMPERED in (log_of(a, log_start) if victim == "sharer" else log_of(b))
            # The proxy relayed a real exchange, and saw nothing in clear.
            assert proxy.pipes_of_kind("invite") and proxy.pipes_of_kind("member")
            assert leaked(proxy.seen_bytes(), sensitive_values(share_record(a))) == []
        finally:
            for link in tamper.links:
                proxy.call(link.close())


# --- a faithful relay, then replays of what it recorded -------------------------------------


@dataclass
class JoinedViaProxy:
    a: Node
    b: Node
    notebook: Path
    joined: Path
    code: str
    proxy: MitmProxy


@pytest.fixture(scope="module")
def joined_via_proxy(
    tmp_path_factory: pytest.TempPathFactory, notebooks_dir: Path
) -> Iterator[JoinedViaProxy]:
    """A shared with a 2-use code; B joined through a relay that recorded everything."""
    root = tmp_path_factory.mktemp("relayed")
    a, b = make_node(root, "a"), make_node(root, "b")
    notebook = distinctive_notebook(notebooks_dir, a.workdir)
    try:
        code = a.share(notebook, "--uses", "2")
        with MitmProxy(rendezvous_url(rendezvous_port(a))) as proxy:
            dial_directly(b, proxy.port)
            joined = Path(b.join(code)["path"])
            wait_until(lambda: a.peers_synced(notebook, 1), what="A to see B synced")
            yield JoinedViaProxy(a, b, notebook, joined, code, proxy)
    finally:
        for node in (a, b):
            node.shut_down(SHUTDOWN_TIMEOUT_S)


def test_relay_of_a_successful_join_sees_nothing_in_clear(joined_via_proxy: JoinedViaProxy) -> None:
    setup = joined_via_proxy
    assert MARKER in setup.joined.read_text()  # the text did travel, peer to peer
    seen = setup.proxy.seen_bytes()
    assert b'"kind": "member"' in seen  # the relay really carried the handshakes
    assert leaked(seen, sensitive_values(share_record(setup.a))) == []
    for sdp_line in (b"a=fingerprint", b"a=candidate", b"m=application"):
        assert sdp_line not in seen  # SDPs travel sealed


def test_replayed_member_handshake_is_rejected(joined_via_proxy: JoinedViaProxy) -> None:
    setup = joined_via_proxy
    (pipe,) = setup.proxy.pipes_of_kind("member")
    recorded = setup.proxy.conversation(pipe)
    recorded_proof = [r.data for r in recorded if r.position == (Direction.TO_DIALLER, 1)]

    replies = asyncio.run(replay_dialler(rendezvous_port(setup.a), recorded, REPLAY_TIMEOUT_S))

    # The sharer answers the replayed HELLO with a fresh PROOF, then rejects the old FINISH:
    # no sealed answer, no link.
    assert len(replies) == 2, replies
    assert json.loads(replies[0]) == {"ok": True}
    assert replies[1][:2] == b"\x01\x11" and [replies[1]] != recorded_proof
    rejected = f"ended: {NOT_A_MEMBER}"
    wait_until(lambda: rejected in log_of(setup.a), what="A to log the rejected proof")
    (share,) = setup.a.status()["shares"]
    assert [peer["id"] for peer in share["peers"]] == [setup.b.status()["daemon"]["id"]]


def test_replayed_invitation_counts_as_a_wrong_code(joined_via_proxy: JoinedViaProxy) -> None:
    setup = joined_via_proxy
    (pipe,) = setup.proxy.pipes_of_kind("invite")
    invitation = invitation_of(setup.a, setup.code)
    assert invitation is not None and invitation["uses_left"] == 1

    replies = asyncio.run(
        replay_dialler(rendezvous_port(setup.a), setup.proxy.conversation(pipe), REPLAY_TIMEOUT_S)
    )

    # A fresh PAKE reply, then the replayed confirmation does not match it: WRONG_CODE, no
    # welcome.
    assert len(replies) == 3, replies
    assert json.loads(replies[0]) == {"ok": True, "invite_version": INVITE_VERSION}
    assert replies[1][:2] == bytes([INVITE_VERSION, MessageType.PAKE_REPLY])
    assert replies[2] == bytes([INVITE_VERSION, MessageType.WRONG_CODE])
    wait_for_attempts_left(setup.a, setup.code, 2)
    assert len(setup.a.status()["shares"][0]["peers"]) == 1


# --- what a signaling service sees -----------------------------------------------------


def published_layers(frame: bytes) -> list[bytes]:
    """A relayed frame's p2prtc payload, decoded: the hub message and the pipe bytes in it
    (base64 twice), so that nothing hides from the search below behind an encoding."""
    try:
        message = json.loads(frame)
        blob = message["data"]["p2prtc"]
    except (ValueError, KeyError, TypeError):
        return []
    layers = [base64.b64decode(blob)]
    with contextlib.suppress(ValueError, KeyError, TypeError):
        layers.append(base64.b64decode(json.loads(layers[0])["d"]))
    return layers


def topics_in(frame: bytes) -> set[str]:
    try:
        message = json.loads(frame)
    except ValueError:
        return set()
    if message.get("type") == "publish":
        return {message["topic"]}
    if message.get("type") in ("subscribe", "unsubscribe"):
        return set(message["topics"])
    return set()


def test_signaling_relay_sees_only_hashed_topics_and_sealed_payloads(
    tmp_path: Path, notebooks_dir: Path, signaling_server: str
) -> None:
    with MitmProxy(signaling_server) as relay_view:
        env = {**LOOPBACK_ENV, "P2PRTC_SIGNAL": f"ws://{LOOPBACK}:{relay_view.port}"}
        a, b = make_node(tmp_path, "a"), make_node(tmp_path, "b")
        a.env, b.env = dict(env), dict(env)  # no P2PRTC_PEERS: they can only meet via the relay
        try:
            code = a.share(distinctive_notebook(notebooks_dir, a.workdir))
            joined = Path(b.join(code)["path"])
            record = share_record(a)
            daemon_ids = [node.status()["daemon"]["id"] for node in (a, b)]
        finally:
            for node in (a, b):
                node.shut_down(SHUTDOWN_TIMEOUT_S)
    assert MARKER in joined.read_text()

    frames = [r.data for r in relay_view.records]
    nameplate = code.split("-")[0]
    topics = set().union(*(topics_in(frame) for frame in frames))
    assert topics == {invite_topic(nameplate), member_topic(bytes.fromhex(record["secret"]))}
    decoded = [layer for frame in frames for layer in published_layers(frame)]
    assert any(layer.startswith(b'{"v": 1, "kind": "member"') for layer in decoded)
    sensitive = sensitive_values(record)
    sensitive["join code words"] = code.split("-", 1)[1].encode()
    sensitive.update({f"daemon id {i}": d.encode() for i, d in enumerate(daemon_ids)})
    assert leaked(b"\n".join(frames + decoded), sensitive) == []
    for sdp_line in (b"a=fingerprint", b"a=candidate"):
        assert not any(sdp_line in layer for layer in decoded)


# --- keys at rest -------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_at_rest_are_private_and_never_logged(joined_via_proxy: JoinedViaProxy) -> None:
    setup = joined_via_proxy
    secret = share_record(setup.a)["secret"]
    assert share_record(setup.b)["secret"] == secret
    for node in (setup.a, setup.b):
        (record,) = (node.home / "shares").glob("*/share.json")
        assert mode(node.home) == 0o700
        assert mode(node.home / "shares") == 0o700
        assert mode(record.parent) == 0o700
        assert mode(record) == 0o600
        assert mode(node.home / "identity.json") == 0o600
        log = (node.home / "daemon.log").read_bytes()
        assert b"started" in log  # the right file, and it is written to
        assert leaked(log, secret_values(share_record(node))) == []
        assert setup.code.encode() not in log
        assert secret not in json.dumps(node.status())


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    """This process's umask for the block (the CLI, and the daemon it starts, inherit it)."""
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def test_a_code_read_from_stdin_and_files_made_as_the_user_expects(
    sharer: Sharer, joiner: Node
) -> None:
    """The code never sits in argv; the joined notebook gets the user's umask like an editor's
    file would, the daemon's log stays private whatever the umask."""
    code = sharer.invite()
    dial_directly(joiner, rendezvous_port(sharer.node))
    with umask(0o027):
        result = subprocess.run(
            joiner.command("join", "-", "--json"),
            input=f"{code}\n",
            cwd=joiner.workdir,
            env=joiner.full_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    joined = Path(json.loads(result.stdout)["path"])
    assert mode(joined) == 0o640
    assert mode(joiner.home / "daemon.log") == 0o600


def test_a_mistyped_code_fails_before_any_daemon_starts(joiner: Node) -> None:
    result = joiner.run("join", "7-guitar-notaword", check=False)
    assert (result.returncode, result.stderr.strip()) == (
        4,
        "p2prtc: The join code is not valid. (unknown word 'notaword')",
    )
    assert not (joiner.home / "daemon.log").exists()


# --- what the LAN sees: mDNS --------------------------------------------------------------


def announcement_in(packet: bytes, nameplate: str) -> dict[str, str] | None:
    """The TXT properties of a p2prtc service in ``packet`` once they show the share."""
    for record in parse_packet(packet):
        if record.type == "DNSText" and record.name.endswith(SERVICE_TYPE):
            properties = txt_properties(record.text)
            if properties.get("n") == nameplate and properties.get("t"):
                return properties
    return None


# Every name an mDNS record of p2prtc may carry: the service type, and a random instance.
_MDNS_NAME = re.compile(r"((p2prtc-[0-9a-f]{12}\.)?_p2prtc\._tcp|p2prtc-[0-9a-f]{12})\.local\.")


@pytest.mark.netns
def test_mdns_reveals_no_file_name_share_id_or_content(tmp_path: Path, notebooks_dir: Path) -> None:
    packets: list[bytes] = []

    def capture_until_shared(message: dict[str, Any]) -> bool:
        packets.append(bytes.fromhex(message["hex"]))
        return announcement_in(packets[-1], nameplate) is not None

    with NetnsLab(2) as lab:
        host, observer = lab.nodes
        capture = lab.spawn_agent(observer, [str(CAPTURE_AGENT), observer.address])
        capture.expect(lambda message: message["event"] == "listening")
        workdir = tmp_path / "work"
        workdir.mkdir()
        env = {"P2PRTC_INTERFACES": host.address, "P2PRTC_MDNS": "1"}
        node = Node(tmp_path / "home", workdir, env, host.namespace)
        try:
            code = node.share(distinctive_notebook(notebooks_dir, workdir))
            nameplate = code.split("-")[0]
            record = share_record(node)
            daemon_id = node.status()["daemon"]["id"]
            capture.send({})  # ask, rather than wait for the next announcement
            capture.expect(capture_until_shared)
        finally:
            node.shut_down(SHUTDOWN_TIMEOUT_S)
        assert capture.wait() == 0

    # Only a version, the open nameplate and a tag that only members can recognise...
    properties = announcement_in(packets[-1], nameplate)
    assert properties is not None and set(properties) == {"v", "n", "t"}
    assert properties["v"] == "1"
    secret = bytes.fromhex(record["secret"])
    assert matches_share_tag(secret, properties["t"], epoch_of(time.time()))
    # ...under random names, and nowhere in any packet a name, an id, a secret or content.
    records = [r for packet in packets for r in parse_packet(packet)]
    assert {r.name for r in records if not _MDNS_NAME.fullmatch(r.name)} == set()
    sensitive = sensitive_values(record)
    sensitive["join code words"] = code.split("-", 1)[1].encode()
    sensitive["daemon id"] = daemon_id.encode()
    assert leaked(b"".join(packets), sensitive) == []

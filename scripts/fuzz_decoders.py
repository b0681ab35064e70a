"""Coverage-guided fuzzing (atheris / libFuzzer) of everything that decodes bytes from outside.

Targets, and what each must do with any input:

- ``framing``: ``Reassembler.feed`` on a run of chunks: a frame, None, or a FramingError.
- ``sync``: ``PeerSync.receive`` with a notebook doc registered, fed raw chunks or sync frames
  for that doc carrying fuzzed y-sync messages (pycrdt's decoder included): never raises.
- ``handshake``: the four handshake machines, fuzzed at every step of an honest exchange
  (the fuzz input replaces one message): ``receive`` never raises.
- ``notebook``: ``parse_notebook``: a notebook or a P2PError, nothing else.
- ``envelope``: ``Opening.decode`` (a rendezvous dialler's first message) and ``parse_code``
  (a typed join code): their typed errors only.

Bounded runs, e.g.::

    .venv/bin/python scripts/fuzz_decoders.py all -runs=50000
    .venv/bin/python scripts/fuzz_decoders.py sync -runs=200000 -max_len=4096

Needs ``atheris`` (``.venv/bin/pip install atheris``; not a project dependency). ``all`` runs
each target in its own process (libFuzzer exits when a run ends) and reports each outcome.
libFuzzer options pass through: a corpus folder (seed ``notebook`` with real notebooks and
``-max_len=40000``), ``-rss_limit_mb``... Results: docs/reliability.md, "Hostile input".
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Not a project dependency, and untyped: .venv/bin/pip install atheris
import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

with atheris.instrument_imports(include=["p2prtc"]):
    from p2prtc.core.codes import InvalidCode, JoinCode, parse_code
    from p2prtc.core.framing import Chunker, Frame, FrameKind, FramingError, Reassembler
    from p2prtc.core.handshake import (
        InviteHost,
        InviteJoiner,
        MemberInitiator,
        MemberResponder,
        SendMessage,
        share_lookup,
    )
    from p2prtc.core.messages import BadMessage, Opening
    from p2prtc.core.model import load_notebook
    from p2prtc.core.notebook import parse_notebook
    from p2prtc.core.sync import PeerSync
    from p2prtc.errors import P2PError

from pycrdt import Doc

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "notebooks" / "00.00-Preface.ipynb"
DOC_ID = b"\x07" * 16
SHARE_ID = b"\x05" * 16
SECRET = b"\x09" * 32
CODE = JoinCode("7", ("guitar", "tornado"))
MAX_MESSAGES = 16
MAX_MESSAGE_BYTES = 4096


def messages(data: atheris.FuzzedDataProvider) -> list[bytes]:
    """Up to MAX_MESSAGES messages cut from the fuzz input."""
    count = data.ConsumeIntInRange(1, MAX_MESSAGES)
    return [data.ConsumeBytes(data.ConsumeIntInRange(0, MAX_MESSAGE_BYTES)) for _ in range(count)]


# --- framing -----------------------------------------------------------------------------


def fuzz_framing(raw: bytes) -> None:
    data = atheris.FuzzedDataProvider(raw)
    reassembler = Reassembler(max_message_bytes=64 * 1024)
    for message in messages(data):
        try:
            frame = reassembler.feed(message)
        except FramingError:
            continue
        assert frame is None or isinstance(frame, Frame)


# --- sync --------------------------------------------------------------------------------


def _notebook_state() -> bytes:
    doc: Doc[Any] = Doc()
    load_notebook(doc, parse_notebook(SAMPLE.read_bytes()))
    return doc.get_update()


NOTEBOOK_STATE = _notebook_state()


def notebook_doc() -> Doc[Any]:
    """A fresh doc holding a real notebook (the fuzz input may change it)."""
    doc: Doc[Any] = Doc()
    doc.apply_update(NOTEBOOK_STATE)
    return doc


def fuzz_sync(raw: bytes) -> None:
    data = atheris.FuzzedDataProvider(raw)
    sync = PeerSync("fuzzer")
    sync.add_doc(DOC_ID, notebook_doc())
    chunker = Chunker()
    for message in messages(data):
        if data.ConsumeBool():  # a well-framed y-sync message for the doc: reach pycrdt
            for chunk in chunker.encode(Frame(FrameKind.SYNC, DOC_ID, message)):
                sync.receive(chunk)
        else:
            sync.receive(message)


# --- handshakes ----------------------------------------------------------------------------


Machine = InviteHost | InviteJoiner | MemberInitiator | MemberResponder


def invitation() -> tuple[Machine, Machine]:
    return InviteJoiner(CODE), InviteHost(CODE, b'{"welcome": true}')


def membership() -> tuple[Machine, Machine]:
    responder = MemberResponder(share_lookup({SHARE_ID: SECRET}), "responder")
    return MemberInitiator(SHARE_ID, SECRET, "initiator"), responder


def fuzz_handshake(raw: bytes) -> None:
    """Run an honest exchange and replace its message number ``step`` by the fuzz input."""
    data = atheris.FuzzedDataProvider(raw)
    first, second = invitation() if data.ConsumeBool() else membership()
    step = data.ConsumeIntInRange(0, 4)
    forged = data.ConsumeBytes(MAX_MESSAGE_BYTES)
    in_flight = [(second, message) for message in first.start()] + [
        (first, message) for message in second.start()
    ]
    sent = 0
    while in_flight:
        receiver, message = in_flight.pop(0)
        if sent == step:
            message = forged
        sent += 1
        sender = second if receiver is first else first
        for event in receiver.receive(message):
            if isinstance(event, SendMessage):
                in_flight.append((sender, event.data))


# --- notebooks and small texts --------------------------------------------------------------


def fuzz_notebook(raw: bytes) -> None:
    with contextlib.suppress(P2PError):
        parse_notebook(raw)


def fuzz_envelope(raw: bytes) -> None:
    with contextlib.suppress(BadMessage):
        Opening.decode(raw)
    text = atheris.FuzzedDataProvider(raw).ConsumeUnicodeNoSurrogates(256)
    with contextlib.suppress(InvalidCode):
        parse_code(text)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "framing": fuzz_framing,
    "sync": fuzz_sync,
    "handshake": fuzz_handshake,
    "notebook": fuzz_notebook,
    "envelope": fuzz_envelope,
}


def run_all(libfuzzer_args: list[str]) -> int:
    failed = []
    for name in TARGETS:
        result = subprocess.run(
            [sys.executable, __file__, name, *libfuzzer_args],
            capture_output=True,
            text=True,
            check=False,
        )
        summary = [line for line in result.stderr.splitlines() if line.startswith("Done")]
        print(f"{name}: exit {result.returncode} {summary[-1] if summary else ''}", flush=True)
        if result.returncode != 0:
            failed.append(name)
            print(result.stderr[-4000:], file=sys.stderr)
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in [*TARGETS, "all"]:
        print(f"usage: {sys.argv[0]} {{{'|'.join(TARGETS)}|all}} [libFuzzer options]")
        return 2
    name, libfuzzer_args = sys.argv[1], sys.argv[2:]
    if name == "all":
        return run_all(libfuzzer_args)
    atheris.Setup([sys.argv[0], *libfuzzer_args], TARGETS[name])
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What ``p2prtc join`` shows while it waits: one line per step the daemon reports
(searching, found, verifying, connected), and a progress bar while the notebook arrives.

On a terminal the transfer is a click progress bar redrawn in place; anywhere else each
step is a plain line and the transfer a line per tenth of it, so a log stays short. The
events are those of docs/cli.md (``"progress": true`` on the control socket).
"""

from __future__ import annotations

from typing import Any, TextIO

import click

# A piped transfer is told at most once per this fraction of it (1/10).
PLAIN_STEPS = 10


def megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.1f} kB"


def step_line(event: dict[str, Any]) -> str | None:
    """The line a step shows; None for a step without one (the transfer)."""
    phase = event.get("phase")
    if phase == "searching":
        return f"searching: {_search_text(event)}"
    if phase == "found":
        return f"found a daemon at {event['at']}: asking it for the code"
    if phase == "verifying":
        return "verifying the code (SPAKE2)"
    if phase == "welcomed":
        return f"code accepted: joining {event['name']} as {event['path']}"
    if phase == "connected":
        via = f" via {event['path_type']}" if event.get("path_type") else ""
        return f"connected to member {str(event['id'])[:8]} at {event.get('address') or '?'}{via}"
    return None


def _search_text(event: dict[str, Any]) -> str:
    lan = event.get("mdns_error") or (
        f"mDNS on {', '.join(event['mdns'])}" if event.get("mdns") else "mDNS off"
    )
    relays = ", ".join(relay["url"] for relay in event.get("relays", [])) or "none"
    peers = ", ".join(event.get("peers", [])) or "none"
    return f"{lan}; relays: {relays}; peers: {peers}"


class JoinProgress:
    """Turns the daemon's join events into what the user sees on ``out``."""

    def __init__(self, out: TextIO, *, terminal: bool) -> None:
        self._out = out
        self._terminal = terminal
        self._bar: Any = None  # click's ProgressBar while a transfer is drawn
        self._told: int | None = None  # the bytes received when last told as a plain line

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("phase") == "receiving":
            self._receiving(int(event["received"]), max(1, int(event["expected"])))
            return
        line = step_line(event)
        if line is not None:
            self.finish()
            click.echo(line, file=self._out)

    def _receiving(self, received: int, expected: int) -> None:
        text = f"{megabytes(received)} of {megabytes(expected)}"
        if not self._terminal:
            if self._told is None or received - self._told >= expected // PLAIN_STEPS:
                self._told = received
                click.echo(f"receiving the notebook: {text}", file=self._out)
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=expected,
                label="receiving the notebook",
                show_eta=False,
                item_show_func=_same,
                file=self._out,
            )
            self._bar.__enter__()
        self._bar.update(received - self._bar.pos, text)

    def finish(self) -> None:
        """End a bar being drawn (the transfer is over, or the join)."""
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.update(bar.length - bar.pos, megabytes(bar.length))
            bar.__exit__(None, None, None)


def _same(text: str | None) -> str | None:
    return text  # the bar shows the text each update passes

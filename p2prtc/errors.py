"""Base of every error a user can see: the docstring is the message (magic-wormhole's habit)."""

from __future__ import annotations


class P2PError(Exception):
    """Something went wrong in p2prtc."""

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The one line a user reads: the class docstring, plus detail when given."""
        summary = (type(self).__doc__ or "error").strip().splitlines()[0]
        return f"{summary} ({self.detail})" if self.detail else summary

    def __str__(self) -> str:
        return self.message


def describe(exc: BaseException) -> str:
    """Any exception as the one line shown in status and logs."""
    if isinstance(exc, P2PError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return "it stopped answering"
    return f"{type(exc).__name__}: {exc}"

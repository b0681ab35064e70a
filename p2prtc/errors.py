"""Base of every error a user can see: the docstring is the message (magic-wormhole's habit)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The exit status of the ``p2prtc`` command for each kind of error (docs/cli.md)."""

    ERROR = 1  # anything not listed
    DAEMON_UNREACHABLE = 3
    CODE_REFUSED = 4  # wrong, malformed, expired, used up, burned, offered by nobody
    DESTINATION_EXISTS = 5
    INVALID_NOTEBOOK = 6
    NOT_SHARED = 7  # the path is not shared / already shared / no such member


class P2PError(Exception):
    """Something went wrong in p2prtc."""

    exit_code: int = ExitCode.ERROR

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
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

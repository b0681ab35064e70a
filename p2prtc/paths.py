"""Where a daemon keeps its state: the home folder and the files in it.

`P2PRTC_HOME` selects the home (default: the platform's user data dir for "p2prtc"), so
two daemons with two homes never share a file or a socket. Everything private is created
owner-only: folders 0700, secret files 0600.

The control socket lives in the home, except when that path is too long for AF_UNIX
(sun_path holds 108 bytes on Linux, 104 on macOS, including the final NUL): then it lives in
a private per-user folder under the system temp dir, named by a hash of the home, so the same
home always maps to the same socket and different homes never collide.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from p2prtc.errors import P2PError

# hashlib (OpenSSL), tempfile and platformdirs are imported where needed: every `p2prtc`
# command imports this module, and most never need them (a command's start is part of what
# a user waits for, docs/benchmarks.md).

HOME_ENV = "P2PRTC_HOME"
APP_NAME = "p2prtc"
SOCKET_NAME = "control.sock"
_SUN_PATH_SIZE = 104 if sys.platform == "darwin" else 108


class UnsafeSocketFolder(P2PError):
    """The temporary folder for the control socket is not private to this user."""


def home() -> Path:
    """The daemon's home: `$P2PRTC_HOME` or the user data dir; created 0700 when missing."""
    configured = os.environ.get(HOME_ENV)
    folder = Path(configured).expanduser() if configured else Path(default_home())
    make_private_dir(folder)
    return folder.resolve()


def default_home() -> str:
    import platformdirs

    return platformdirs.user_data_dir(APP_NAME, appauthor=False)


def make_private_dir(folder: Path) -> Path:
    """Create `folder` (and parents) if missing; the folder itself gets mode 0700."""
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask; chmod sets it exactly.
        folder.chmod(0o700)
    return folder


def control_socket(home: Path) -> Path:
    """Path of the daemon's control socket for `home` (see the module docstring)."""
    in_home = home / SOCKET_NAME
    if len(os.fsencode(in_home)) < _SUN_PATH_SIZE:
        return in_home
    return _short_socket_dir() / f"{_home_key(home)}.sock"


def _home_key(home: Path) -> str:
    import hashlib

    return hashlib.sha256(os.fsencode(home.resolve())).hexdigest()[:24]


def _short_socket_dir() -> Path:
    """A per-user 0700 folder in the temp dir; refuse one another user could tamper with."""
    import tempfile

    folder = Path(tempfile.gettempdir()) / f"{APP_NAME}-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise UnsafeSocketFolder(str(folder))
    return folder


def lock_file(home: Path) -> Path:
    """Locked (flock, exclusive) by the home's daemon process from start to exit."""
    return home / "daemon.lock"


def log_file(home: Path) -> Path:
    """The daemon's log file."""
    return home / "daemon.log"


def shares_dir(home: Path) -> Path:
    """Folder holding one entry per share (its store and metadata); created 0700."""
    return make_private_dir(home / "shares")


def keys_file(home: Path) -> Path:
    """The file with the daemon's secrets; write it with `write_private`."""
    return home / "keys"


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, readable by the owner only (0600).

    The content is written to a 0600 temp file in the same folder, fsynced, renamed over
    `path`, and the folder is fsynced: a crash leaves the old file or the new, never a mix,
    and the secret is never readable by others, not even briefly.
    """
    import tempfile

    # mkstemp creates the file with mode 0600 regardless of the umask.
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or creation in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

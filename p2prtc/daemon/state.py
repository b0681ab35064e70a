"""What a daemon keeps on disk besides documents: its identity and its share records.

Layout under ``P2PRTC_HOME``: ``identity.json`` (this daemon's id) and, per share,
``shares/<share id hex>/share.json`` (path, name, secret, members; 0600, the secret never
logged) next to ``doc.sqlite`` (the update log).
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from p2prtc import paths
from p2prtc.core.keys import new_secret
from p2prtc.core.membership import KeyState, Standing, standing
from p2prtc.core.messages import SHARE_ID_SIZE

logger = logging.getLogger(__name__)

# Rotated-away secrets kept per share: a daemon offline across more rotations is not told.
MAX_RETIRED_SECRETS = 3
_RECORD = "share.json"
_STORE = "doc.sqlite"


def load_daemon_id(home: Path) -> str:
    """This daemon's stable id, made on first start. Members know each other by it."""
    path = home / "identity.json"
    try:
        return str(json.loads(path.read_bytes())["daemon_id"])
    except (OSError, ValueError, KeyError, TypeError):
        daemon_id = secrets.token_hex(8)
        paths.write_private(path, json.dumps({"daemon_id": daemon_id}).encode())
        return daemon_id


@dataclass
class ShareRecord:
    """A share as persisted: enough to resume it after a restart."""

    share_id: bytes
    secret: bytes
    path: Path
    name: str
    members: list[str] = field(default_factory=list)
    joined: bool = False  # False until a joiner has written the file once
    generation: int = 0  # bumped each time the secret is rotated (a member was removed)
    removed: dict[str, int] = field(default_factory=dict)  # id -> generation that removed it
    author: str = ""  # who made the current secret's rotation
    departed: list[str] = field(default_factory=list)  # members that said they left it
    # What a member told us: removed, or outdated (the secret rotated without us), and who.
    cut_off: Standing | None = None
    cut_off_by: str = ""
    # Secrets rotated away, newest first, each with its generation: a daemon that still
    # holds one is let in only to be told it was cut off (see Syncing.on_peer_share).
    retired: list[tuple[int, bytes]] = field(default_factory=list)

    def standing(self, me: str) -> Standing:
        return standing(me, self.members, self.departed, self.removed, self.cut_off)

    def told_cut_off(self, standing: Standing, by: str) -> None:
        self.cut_off, self.cut_off_by = standing, by

    def key_state(self) -> KeyState:
        return KeyState(
            self.generation,
            self.secret,
            tuple(self.members),
            frozenset(self.removed.items()),
            self.author,
        )

    def adopt(self, state: KeyState) -> None:
        if state.secret != self.secret:
            self.retired = [(self.generation, self.secret), *self.retired][:MAX_RETIRED_SECRETS]
        self.generation, self.secret, self.author = state.generation, state.secret, state.author
        self.members = list(state.members)
        self.removed = dict(state.removed)

    @classmethod
    def new(cls, path: Path, daemon_id: str) -> ShareRecord:
        return cls(secrets.token_bytes(SHARE_ID_SIZE), new_secret(), path, path.name, [daemon_id])

    def folder(self, home: Path) -> Path:
        return paths.shares_dir(home) / self.share_id.hex()

    def store_path(self, home: Path) -> Path:
        return self.folder(home) / _STORE

    def save(self, home: Path) -> None:
        folder = paths.make_private_dir(self.folder(home))
        data = {
            "share_id": self.share_id.hex(),
            "secret": self.secret.hex(),
            "path": str(self.path),
            "name": self.name,
            "members": self.members,
            "joined": self.joined,
            "generation": self.generation,
            "removed": self.removed,
            "author": self.author,
            "departed": self.departed,
            "cut_off": self.cut_off.value if self.cut_off else "",
            "cut_off_by": self.cut_off_by,
            "retired": [[generation, secret.hex()] for generation, secret in self.retired],
        }
        paths.write_private(folder / _RECORD, json.dumps(data, indent=1).encode())

    def delete(self, home: Path) -> None:
        shutil.rmtree(self.folder(home), ignore_errors=True)


def load_records(home: Path) -> list[ShareRecord]:
    """Every share this home holds; an unreadable record is logged and skipped."""
    records = []
    for record_file in sorted(paths.shares_dir(home).glob(f"*/{_RECORD}")):
        try:
            data = json.loads(record_file.read_bytes())
            records.append(
                ShareRecord(
                    share_id=bytes.fromhex(data["share_id"]),
                    secret=bytes.fromhex(data["secret"]),
                    path=Path(data["path"]),
                    name=str(data["name"]),
                    members=[str(member) for member in data.get("members", [])],
                    joined=bool(data.get("joined", True)),
                    generation=int(data.get("generation", 0)),
                    removed={str(k): int(v) for k, v in data.get("removed", {}).items()},
                    author=str(data.get("author", "")),
                    departed=[str(member) for member in data.get("departed", [])],
                    cut_off=Standing(data["cut_off"]) if data.get("cut_off") else None,
                    cut_off_by=str(data.get("cut_off_by", "")),
                    retired=[(int(g), bytes.fromhex(s)) for g, s in data.get("retired", [])],
                )
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.error("skipping unreadable share record %s: %s", record_file, exc)
    return records

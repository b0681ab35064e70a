"""The saved versions of a shared file: their records in its store, restore, recall, retention.

A version is a text the daemon wrote or read. What restores one after a restart is a record
in the store's metadata (its digest and log position, its own text only when it differs from
the doc there); replaying the log rebuilds its content and doc state. The records of the
versions an editor's stale buffer may still start from are kept; the log before the oldest
of them is compacted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pycrdt import Doc

from p2prtc.adapters.store import UpdateStore
from p2prtc.core.engine import NotebookEngine, text_digest
from p2prtc.core.history import MAX_HISTORY
from p2prtc.core.model import doc_to_notebook
from p2prtc.core.notebook import Notebook, parse_notebook
from p2prtc.core.remembered import MAX_VERSIONS
from p2prtc.daemon.crash_points import crash_point
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

# The base: the last text the daemon wrote or read, with the cell ids and the log position
# of the doc state it matches. "pending" is the text about to be written, recorded before
# the rename: after a crash between the two, the restarted daemon still knows the file.
_BASE = "base"
_PENDING = "pending"
# The versions before the base (digest + log position), so that an editor's stale buffer
# still finds the version it started from: rebuilt from the log when older than the versions
# the engine keeps whole, and after a restart. Compaction keeps their log positions.
_HISTORY = "history"
# The last save merged with remote edits: its content and its doc state are its own (the
# fork's), not the doc at its log position, so both are kept (an editor may save from it
# again, even after a restart).
_MERGED = "merged"
# Compact the update log once it holds this many rows older than the oldest version in the
# history (each save or remote edit adds one).
COMPACT_AFTER_UPDATES = 500


class SavedVersions:
    """The version records of one shared file (``path``, for messages) in its ``store``, and
    the versions its ``engine`` remembers from them."""

    def __init__(self, path: Path, engine: NotebookEngine, store: UpdateStore) -> None:
        self.path = path
        self.engine = engine
        self.store = store
        self.base_seq = 0  # the log position of the base
        self._history: list[dict[str, Any]] = []

    def restore(self) -> None:
        """After a restart (the engine holds the doc from the log): the versions from their
        records, the newest whole, the older ones as facts (see core.history)."""
        store = self.store
        self._history = json.loads(store.get_meta(_HISTORY) or b"[]")
        saved = [(info, b"") for info in self._history]
        # The records of the last write and merged save outlive the saves made since: one
        # older than every version the history still holds was forgotten (a save started
        # from a newer one), and brought back, an undo to it would be "nothing changed".
        oldest = min((int(info["seq"]) for info in self._history), default=0)
        for name in (_MERGED, _PENDING, _BASE):  # the base last: it is the newest version
            info = json.loads(store.get_meta(f"{name}_info") or b"{}")
            if "seq" in info and int(info["seq"]) >= oldest:
                saved.append((info, store.get_meta(f"{name}_text") or b""))
        saved = sorted(_distinct(saved), key=lambda entry: int(entry[0]["seq"]))
        whole, past = saved[-MAX_VERSIONS:], saved[:-MAX_VERSIONS]
        states = self._replay(past, {int(info["seq"]) for info, _ in whole})
        merged_state = store.get_meta(f"{_MERGED}_state")
        merged_info = json.loads(store.get_meta(f"{_MERGED}_info") or b"{}")
        for info, text in whole:
            self.base_seq = int(info["seq"])
            state = states.get(self.base_seq)
            if merged_state and info == merged_info:
                state = Doc()
                state.apply_update(merged_state)
            self._restore_version(info, text, state)
        if saved and self.engine.versions.latest() is None:
            logger.warning("no saved version of %s is usable; using the shared copy", self.path)
            self.engine.remember_written(self.engine.render())

    def _replay(
        self, past: list[tuple[dict[str, Any], bytes]], seqs: set[int]
    ) -> dict[int, Doc[Any]]:
        """One replay of the log: the ``past`` versions (info, own text) go to the engine as
        facts, and the doc as it was just after each of ``seqs`` is returned.

        A position folded away by compaction is missing: that version cannot be restored.
        """
        past_at: dict[int, list[tuple[dict[str, Any], bytes]]] = {}
        for info, text in past:
            past_at.setdefault(int(info["seq"]), []).append((info, text))
        states: dict[int, Doc[Any]] = {}
        doc: Doc[Any] = Doc()
        for seq, update in self.store.entries():
            doc.apply_update(update)
            for info, text in past_at.get(seq, []):
                try:
                    notebook = _content(info, text, doc)
                    self.engine.versions.remember_past(bytes.fromhex(info["digest"]), notebook)
                except (P2PError, KeyError, ValueError) as exc:
                    logger.info("an old version of %s cannot be restored: %s", self.path, exc)
            if seq in seqs:
                states[seq] = Doc()
                states[seq].apply_update(doc.get_update())
        return states

    def _restore_version(
        self, info: dict[str, Any], text: bytes, state_doc: Doc[Any] | None
    ) -> None:
        """Rebuild a remembered version whole: its doc state and its content."""
        try:
            if state_doc is None:
                raise ValueError("its log position was compacted away")
            notebook = _content(info, text, state_doc)
            digest = bytes.fromhex(info["digest"])
        except (P2PError, KeyError, ValueError) as exc:
            logger.info("a saved version of %s cannot be restored: %s", self.path, exc)
            return
        self.engine.versions.remember_base(digest, notebook, state_doc.get_update())

    def _state_at(self, seq: int) -> bytes | None:
        """The doc state just after log position ``seq``; None once compacted away."""
        updates = self.store.updates(upto=seq)
        if not updates:  # compaction deletes every row up to the one it writes
            return None
        doc: Doc[Any] = Doc()
        for update in updates:
            doc.apply_update(update)
        return doc.get_update()

    def recall(self, digest: bytes) -> bytes | None:
        """The engine's Recall: the doc state of a remembered version.

        The last save merged with remote edits has a state of its own (the fork's, kept with
        it): an editor that never reloads saves from it next.
        """
        merged = json.loads(self.store.get_meta(f"{_MERGED}_info") or b"{}")
        if merged.get("digest") == digest.hex():
            return self.store.get_meta(f"{_MERGED}_state")
        seqs = [int(info["seq"]) for info in self._history if info["digest"] == digest.hex()]
        return self._state_at(seqs[-1]) if seqs else None

    def pending_meta(self, text: bytes, seq: int, digest: bytes | None = None) -> dict[str, bytes]:
        """The record of a text about to be written over the file (its base once written),
        to store with the updates it shows; ``digest``: its ``text_digest``, when the caller
        has it (a 50 MB text takes 0.05 s to hash)."""
        return self._version_meta(_PENDING, text, seq, digest=digest)

    def record_base(self, text: bytes, seq: int, digest: bytes | None = None) -> None:
        """The text just written or read is the base, the doc at log position ``seq``."""
        self.base_seq = seq
        self.store.set_metas(self.base_meta(text, seq, digest=digest))

    def base_meta(
        self, text: bytes, seq: int, *, keep_text: bool = False, digest: bytes | None = None
    ) -> dict[str, bytes]:
        """The records of a new base, and the history of the bases before it (the
        restorable ones). ``keep_text``: a save merged with remote edits, whose text and doc
        state differ from the doc at ``seq``."""
        meta = self._version_meta(_BASE, text, seq, keep_text=keep_text, digest=digest)
        latest = self.engine.versions.latest()
        if keep_text and latest is not None:
            meta.update(self._version_meta(_MERGED, text, seq, keep_text=True, digest=digest))
            meta[f"{_MERGED}_state"] = latest.state
        if not keep_text:
            # Only versions a save may still start from (the engine forgets those before a
            # save's start: an undo back to one of them is a change, not "nothing changed").
            remembered = [
                info
                for info in self._history
                if self.engine.versions.remembers(bytes.fromhex(info["digest"]))
            ]
            self._history = [*remembered, json.loads(meta[f"{_BASE}_info"])]
            self._history = self._history[-(MAX_HISTORY + MAX_VERSIONS) :]
            meta[_HISTORY] = json.dumps(self._history).encode()
        return meta

    def _version_meta(
        self,
        name: str,
        text: bytes,
        seq: int,
        *,
        keep_text: bool = False,
        digest: bytes | None = None,
    ) -> dict[str, bytes]:
        """What restores a version after a restart: its digest (``text_digest(text)``,
        given when known) and log position.

        Its content is the doc at that position, so the text itself (megabytes, on every
        save) is only kept when it differs from the doc.
        """
        info: dict[str, Any] = {"digest": (digest or text_digest(text)).hex(), "seq": seq}
        if keep_text:
            info["ids"] = self._ids()
        return {
            f"{name}_info": json.dumps(info).encode(),
            f"{name}_text": text if keep_text else b"",
        }

    def _ids(self) -> list[str]:
        latest = self.engine.versions.latest()
        return [cell["id"] for cell in latest.notebook["cells"]] if latest else []

    def maybe_compact(self) -> None:
        # Everything up to the oldest version a stale buffer may start from folds into one
        # state; the log after it stays, to rebuild those versions.
        oldest = min([int(info["seq"]) for info in self._history], default=self.base_seq)
        if self.store.count(upto=oldest) < COMPACT_AFTER_UPDATES:
            return
        state = self._state_at(oldest)
        if state is not None:
            crash_point("compact-before")
            self.store.compact(state, upto=oldest)
            crash_point("compact-after")
            logger.info("compacted the update log of %s", self.path)


def _content(info: dict[str, Any], text: bytes, doc: Doc[Any]) -> Notebook:
    """A remembered version's content: usually the doc at its log position; a save merged
    with remote edits (the file then differs from the doc) kept its own text and cell ids."""
    return _with_ids(parse_notebook(text), info.get("ids", [])) if text else doc_to_notebook(doc)


def _with_ids(notebook: Notebook, ids: list[str]) -> Notebook:
    if len(ids) != len(notebook["cells"]):
        return notebook
    cells = [
        {**cell, "id": cell.get("id") or cell_id}
        for cell, cell_id in zip(notebook["cells"], ids, strict=True)
    ]
    return {**notebook, "cells": cells}


def _distinct(saved: list[tuple[dict[str, Any], bytes]]) -> list[tuple[dict[str, Any], bytes]]:
    """One record per version: the newest is the history's last entry, the base and maybe
    the pending write too, and each copy restored whole would push an older version out of
    those kept whole (a stale save then merged against a newer one: chaos seed 935607494).
    The record that kept the version's own text wins."""
    by_version: dict[tuple[str, int], tuple[dict[str, Any], bytes]] = {}
    for info, text in saved:
        key = (str(info.get("digest")), int(info["seq"]))
        if key not in by_version or (text and not by_version[key][1]):
            by_version[key] = (info, text)
    return list(by_version.values())

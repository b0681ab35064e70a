"""One shared notebook on this machine: its file, its engine and its durable update log.

Rules from the design: an update is in the store before it is sent anywhere; the daemon's
own writes are atomic and recognised when the watcher reports them; an invalid file is
reported and never ingested; edits made while the daemon was stopped are ingested at start,
three-way against the last version the daemon wrote or read (persisted as the *base*).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc, merge_updates

from p2prtc.adapters.files import (
    FileChangedMeanwhile,
    FileUnreadable,
    Signature,
    atomic_write,
    displaced_path,
    read_file,
    signature_of,
)
from p2prtc.adapters.store import LogEntry, UpdateStore
from p2prtc.core.edits import Author
from p2prtc.core.engine import MAX_VERSIONS, NotebookEngine, text_digest
from p2prtc.core.history import MAX_HISTORY
from p2prtc.core.model import doc_to_notebook, meta_of
from p2prtc.core.notebook import MAX_NOTEBOOK_BYTES, Notebook, parse_notebook
from p2prtc.daemon import changelog
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
# Names a crash_point at which the process kills itself (tests only).
CRASH_AT_ENV = "P2PRTC_CRASH_AT"
# Tries to replace the file when editors keep saving over it meanwhile.
_WRITE_ATTEMPTS = 5


class SharedFile:
    """Keeps ``path`` and the shared doc in step. Not thread-safe: one event loop owns it."""

    def __init__(self, path: Path, engine: NotebookEngine, store: UpdateStore, member: str) -> None:
        self.path = path
        self.engine = engine
        self.store = store
        self.member = member  # this daemon's id: the author of its saves
        self._base_seq = 0
        self._history: list[dict[str, Any]] = []
        # Peers' updates the doc has but the store refused (disk full): persisted before
        # anything else is, and before the file shows them.
        self._unsaved: list[bytes] = []
        self._unsaved_log: list[LogEntry] = []
        self._bursts = changelog.Bursts()

    @property
    def doc(self) -> Doc[Any]:
        return self.engine.doc

    @property
    def has_notebook(self) -> bool:
        """False while a joiner's doc is still empty (no peer with content answered yet)."""
        return "nbformat" in meta_of(self.engine.doc)

    @classmethod
    def create(cls, path: Path, store: UpdateStore, member: str) -> SharedFile:
        """The sharer's one initial load of the file."""
        text = read_file(path, MAX_NOTEBOOK_BYTES)
        engine = NotebookEngine.load(text)
        shared = cls(path, engine, store, member)
        shared._base_seq = store.append(engine.full_state(), shared._log(changelog.SHARE))
        store.set_metas(shared._base_meta(text, shared._base_seq))
        return shared

    @classmethod
    def empty(cls, path: Path, store: UpdateStore, member: str) -> SharedFile:
        """A joiner's copy: it adopts the state peers send and never loads its own file."""
        return cls(path, NotebookEngine(Doc()), store, member)

    @classmethod
    def restore(cls, path: Path, store: UpdateStore, member: str) -> SharedFile:
        """Reopen after a restart: the doc from the log, the versions from its metadata."""
        shared = cls(path, NotebookEngine.from_updates(store.updates()), store, member)
        shared._history = json.loads(store.get_meta(_HISTORY) or b"[]")
        saved = [(info, b"") for info in shared._history]
        for name in (_MERGED, _PENDING, _BASE):  # the base last: it is the newest version
            info = json.loads(store.get_meta(f"{name}_info") or b"{}")
            if "seq" in info:
                saved.append((info, store.get_meta(f"{name}_text") or b""))
        saved.sort(key=lambda entry: int(entry[0]["seq"]))
        # The newest are restored whole, the older ones as facts (see core.history).
        whole, past = saved[-MAX_VERSIONS:], saved[:-MAX_VERSIONS]
        states = shared._replay(past, {int(info["seq"]) for info, _ in whole})
        merged_state = store.get_meta(f"{_MERGED}_state")
        merged_info = json.loads(store.get_meta(f"{_MERGED}_info") or b"{}")
        for info, text in whole:
            shared._base_seq = int(info["seq"])
            state = states.get(shared._base_seq)
            if merged_state and info == merged_info:
                state = Doc()
                state.apply_update(merged_state)
            shared._restore_version(info, text, state)
        if saved and shared.engine.latest_version() is None:
            logger.warning("no saved version of %s is usable; using the shared copy", path)
            shared.engine.remember_written(shared.engine.render())
        return shared

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
                    self.engine.remember_past(bytes.fromhex(info["digest"]), notebook)
                except (P2PError, KeyError, ValueError) as exc:
                    logger.info("an old version of %s cannot be restored: %s", self.path, exc)
            if seq in seqs:
                states[seq] = Doc()
                states[seq].apply_update(doc.get_update())
        return states

    def _state_at(self, seq: int) -> bytes | None:
        """The doc state just after log position ``seq``; None once compacted away."""
        updates = self.store.updates(upto=seq)
        if not updates:  # compaction deletes every row up to the one it writes
            return None
        doc: Doc[Any] = Doc()
        for update in updates:
            doc.apply_update(update)
        return doc.get_update()

    def _recall(self, digest: bytes) -> bytes | None:
        """The engine's Recall: the doc state of a remembered version.

        The last save merged with remote edits has a state of its own (the fork's, kept with
        it): an editor that never reloads saves from it next.
        """
        merged = json.loads(self.store.get_meta(f"{_MERGED}_info") or b"{}")
        if merged.get("digest") == digest.hex():
            return self.store.get_meta(f"{_MERGED}_state")
        seqs = [int(info["seq"]) for info in self._history if info["digest"] == digest.hex()]
        return self._state_at(seqs[-1]) if seqs else None

    def catch_up(self) -> bytes | None:
        """After a restart: ingest edits made while stopped, or rewrite a missing file.

        Returns the update to send (already persisted). Raises for an invalid file.
        """
        if self.engine.latest_version() is None:
            return None  # a join that never completed: wait for peers
        kept = displaced_path(self.path)
        if kept.exists():  # the daemon died before merging a save its write displaced
            logger.warning("merging a save of %s displaced before a crash", self.path)
            update = self._merge_displaced(read_file(kept, MAX_NOTEBOOK_BYTES))
            return merged(update, self.write())
        if not self.path.exists():
            logger.warning("%s is missing: writing the shared copy back", self.path)
        else:
            with contextlib.suppress(P2PError):  # an unreadable file is the write's to report
                self.engine.learn_form(read_file(self.path, MAX_NOTEBOOK_BYTES))
        return self.write()

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
        self.engine.remember_base(digest, notebook, state_doc.get_update())

    def ingest(self, text: bytes) -> bytes | None:
        """Merge a save of the file; returns the update to send, already persisted.

        Raises InvalidNotebook & co. (nothing ingested) for a file that is not a notebook.
        """
        self.save_unsaved()
        author = Author(self.member, time.time())
        result = self.engine.ingest(text, recall=self._recall, author=author)
        if result.update is not None:
            # The seq this append gets is the next one: base and update land in one transaction.
            seq = (self.store.last_seq() or 0) + 1
            # A save merged with remote edits differs from the doc: keep its own text.
            meta = self._base_meta(text, seq, keep_text=result.needs_write)
            log = self._log(changelog.SAVE)
            self._base_seq = self.store.append_with_meta(result.update, meta, log)
            crash_point("ingest-persisted")
        if result.needs_write:
            self.write()
        return result.update

    def own_versions(self) -> frozenset[bytes]:
        """The digests (``text_digest``) of the notebook's texts as this daemon wrote or read
        them (the versions kept whole): a snapshot, for use off the event loop."""
        return self.engine.known_digests()

    def read_and_ingest(self) -> bytes | None:
        """The watcher saw the file change: ingest it unless it is our own last write (an
        older version saved unchanged by a stale editor is written over with the doc)."""
        text = read_file(self.path, MAX_NOTEBOOK_BYTES)
        latest = self.engine.latest_version()
        if latest is not None and latest.digest == text_digest(text):
            return None
        return self.ingest(text)

    def apply_remote(self, update: bytes, sender: str | None = None) -> None:
        """Persist an update a peer sent (already applied to the doc by the sync session);
        ``sender``: that peer, None for a Jupyter room attached to this daemon.

        If the store refuses it (disk full), it raises, and the update is kept to be persisted
        by the next call, save or write.
        """
        self._unsaved.append(update)
        if sender is None:
            self._unsaved_log += self._log(changelog.JUPYTER)
        else:
            self._unsaved_log += self._log(changelog.PEER, sender)
        self.save_unsaved()

    def save_unsaved(self) -> None:
        """Persist the peers' updates a store failure left in memory; raises while it fails."""
        if self._unsaved:
            # One update (a joiner's first state, say) is stored as is: merging it alone
            # would decode and encode it again (0.1 s for 50 MB).
            update = self._unsaved[0] if len(self._unsaved) == 1 else merge_updates(*self._unsaved)
            self.store.append(update, self._unsaved_log)
            self._unsaved.clear()
            self._unsaved_log.clear()

    def _log(self, kind: str, sender: str | None = None) -> list[LogEntry]:
        """The log entries of the update being persisted: the cells stamped meanwhile."""
        stamps, concurrent = self.engine.edits.drain()
        if self.engine.latest_version() is None:  # a joiner's first state: the past, not news
            kind, stamps, concurrent = changelog.JOIN, [], []
        logged = changelog.entries(kind, sender or self.member, stamps, concurrent, self.doc)
        return self._bursts.kept(logged)

    def write(self, *, replace_unknown: bool = False) -> bytes | None:
        """Bring the file up to date with the doc.

        A save on disk that was not ingested yet is merged first, never overwritten (its
        update, to send to peers, is returned); an invalid file on disk raises and stays
        untouched until the user fixes it. ``replace_unknown`` is for a joiner's first write
        over a file the user agreed to replace.
        """
        self.save_unsaved()
        repair, notebook = self._repair()
        return merged(repair, self._write(replace_unknown, notebook))

    def holds_another_notebook(self) -> bool:
        """Whether the file on disk is there and holds something else than the doc (a
        joiner's destination: the same notebook is adopted, another one is never replaced
        unless the user said so)."""
        on_disk = self._read_if_present()
        return on_disk is not None and not self.engine.holds(on_disk)

    def _repair(self) -> tuple[bytes | None, Notebook | None]:
        """Repair cells moved concurrently (core.repair) before the file shows the doc:
        persisted first, then sent like any update; else the doc's notebook, unchanged."""
        repair, notebook = self.engine.repair()
        if repair is not None:
            self.store.append(repair)
        return repair, notebook

    def _write(self, replace_unknown: bool, notebook: Notebook | None = None) -> bytes | None:
        """``notebook``: the doc's as it is (converted by the repair just before), if known."""
        for _ in range(_WRITE_ATTEMPTS):
            signature = signature_of(self.path)
            on_disk = self._read_if_present()
            if on_disk is not None and not replace_unknown and not self.engine.is_known(on_disk):
                # A save the watcher has not delivered yet: merge it (its ingest writes the
                # merged result if needed) rather than overwrite it.
                return self.ingest(on_disk)
            try:
                return self._replace(on_disk, signature, notebook)
            except FileChangedMeanwhile:
                crash_point("write-retry")
                replace_unknown = False  # whatever is there now is someone's save
        return None  # editors keep saving: the watcher delivers them, then we write again

    def _replace(
        self, on_disk: bytes | None, signature: Signature | None, notebook: Notebook | None
    ) -> bytes | None:
        """Write the doc over the file; the update of a save it displaced, if any."""
        if on_disk is not None and self.engine.holds_doc(on_disk):
            return None  # nothing changed since it was written or read
        text, notebook = self.engine.rendered(notebook)  # one conversion of the doc for all
        if on_disk is not None and self.engine.shows_doc(on_disk, notebook):
            return None  # the same content (written in another form, say): left alone
        data = text.encode()
        if data == on_disk:
            if not self.engine.is_known(data):
                self.engine.remember_written(text, notebook)
            return None
        digest = text_digest(data)  # once: a 50 MB notebook takes 0.05 s to hash
        self.engine.remember_written(text, notebook, digest)
        seq = self.store.last_seq() or 0
        self.store.set_metas(self._version_meta(_PENDING, data, seq, digest=digest))
        crash_point("write-pending")
        displaced = atomic_write(self.path, data, unless_changed_from=signature)
        crash_point("write-renamed")
        self._base_seq = seq
        self.store.set_metas(self._base_meta(data, seq, digest=digest))
        self._maybe_compact()
        if displaced is None:
            return None
        # An editor saved in the very instant of our rename: merge its save now (and write
        # the merged result), as if the watcher had brought it.
        logger.info("merging a save of %s that landed while writing it", self.path)
        crash_point("write-displaced")
        return self._merge_displaced(displaced)

    def _merge_displaced(self, displaced: bytes) -> bytes | None:
        """Merge a save a write displaced (kept on disk until then: see displaced_path)."""
        try:
            update = self.ingest(displaced)
        except P2PError:
            # Not a notebook: give the user's file back untouched, and report it.
            atomic_write(self.path, displaced, unless_changed_from=signature_of(self.path))
            raise
        finally:
            displaced_path(self.path).unlink(missing_ok=True)
        return update

    def _read_if_present(self) -> bytes | None:
        try:
            return read_file(self.path, MAX_NOTEBOOK_BYTES)
        except FileUnreadable:
            if self.path.exists():
                raise
            return None

    def _ids(self) -> list[str]:
        latest = self.engine.latest_version()
        return [cell["id"] for cell in latest.notebook["cells"]] if latest else []

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

    def _base_meta(
        self, text: bytes, seq: int, *, keep_text: bool = False, digest: bytes | None = None
    ) -> dict[str, bytes]:
        """The new base, and the history of the bases before it (the restorable ones)."""
        meta = self._version_meta(_BASE, text, seq, keep_text=keep_text, digest=digest)
        latest = self.engine.latest_version()
        if keep_text and latest is not None:
            meta.update(self._version_meta(_MERGED, text, seq, keep_text=True, digest=digest))
            meta[f"{_MERGED}_state"] = latest.state
        if not keep_text:
            # Only versions a save may still start from (the engine forgets those before a
            # save's start: an undo back to one of them is a change, not "nothing changed").
            remembered = [
                info
                for info in self._history
                if self.engine.remembers(bytes.fromhex(info["digest"]))
            ]
            self._history = [*remembered, json.loads(meta[f"{_BASE}_info"])]
            self._history = self._history[-(MAX_HISTORY + MAX_VERSIONS) :]
            meta[_HISTORY] = json.dumps(self._history).encode()
        return meta

    def _maybe_compact(self) -> None:
        # Everything up to the oldest version a stale buffer may start from folds into one
        # state; the log after it stays, to rebuild those versions.
        oldest = min([int(info["seq"]) for info in self._history], default=self._base_seq)
        if self.store.count(upto=oldest) < COMPACT_AFTER_UPDATES:
            return
        state = self._state_at(oldest)
        if state is not None:
            crash_point("compact-before")
            self.store.compact(state, upto=oldest)
            crash_point("compact-after")
            logger.info("compacted the update log of %s", self.path)


def merged(*updates: bytes | None) -> bytes | None:
    """One update for all of these (None: no change at all)."""
    present = [update for update in updates if update is not None]
    return merge_updates(*present) if len(present) > 1 else next(iter(present), None)


def crash_point(name: str) -> None:
    """Die here, as by kill -9, when ``P2PRTC_CRASH_AT`` names this point: deterministic
    crashes for the tests (tests/test_crash_points.py), at the steps where a crash must
    lose nothing. Read at each call: cheap, and a test process can set it."""
    if os.environ.get(CRASH_AT_ENV) == name:
        logger.warning("crash point %s: dying as by kill -9", name)
        os.kill(os.getpid(), signal.SIGKILL)


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

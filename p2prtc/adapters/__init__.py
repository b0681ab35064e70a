"""Adapters: each wraps one library (aiortc, zeroconf, watchfiles, websockets, sqlite)."""

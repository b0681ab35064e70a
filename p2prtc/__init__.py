"""p2prtc: peer-to-peer live sync of Jupyter notebooks."""

from __future__ import annotations

__version__ = "0.1.0"

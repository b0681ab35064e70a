from __future__ import annotations

from p2prtc.cli import main

main(prog_name="p2prtc")

"""What a daemon loads: the WebRTC stack (aiortc, and PyAV/FFmpeg under it) only once it
makes its first link, so a daemon that starts for a wrong code, or runs with no peer,
stays small and starts fast. Checked on real daemons through /proc/PID/maps, the way a
user would see which libraries a process holds."""

from __future__ import annotations

from pathlib import Path

from daemons import SAMPLE, copy_notebook, join_directly, loopback_nodes, wait_until

from p2prtc.core.wordlist import WORDS


def holds_ffmpeg(pid: int) -> bool:
    """Whether the process has FFmpeg's libraries (shipped with PyAV) mapped."""
    return "libavcodec" in Path(f"/proc/{pid}/maps").read_text()


def test_ffmpeg_is_loaded_only_with_the_first_link(tmp_path: Path, notebooks_dir: Path) -> None:
    a, b = loopback_nodes(tmp_path, "a", "b")
    notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / SAMPLE)
    try:
        code = a.share(notebook)
        assert not holds_ffmpeg(a.pid()), "a sharer with no peer loaded the WebRTC stack"

        b.env["P2PRTC_PEERS"] = f"127.0.0.1:{a.status()['daemon']['rendezvous_port']}"
        nameplate, *words = code.split("-")
        other = next(word for word in WORDS if word not in words)
        wrong = b.run("join", "-".join([nameplate, other, other]), check=False)
        assert "wrong" in wrong.stderr.lower(), wrong.stderr
        assert not holds_ffmpeg(b.pid()), "a wrong code loaded the WebRTC stack"

        join_directly(a, b, notebook, a.json("invite", str(notebook))["code"])
        wait_until(lambda: holds_ffmpeg(a.pid()) and holds_ffmpeg(b.pid()), what="linked")
    finally:
        for node in (b, a):
            node.shut_down()

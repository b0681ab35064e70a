"""The daemon as a user service: a systemd user unit (Linux) or a launchd agent (macOS).

``install`` writes the unit for this home (so several homes can each have one) and asks
the service manager to start it at login; ``uninstall`` undoes both. Where the manager
cannot be reached (no user session bus, a container), the file is still written and the
caller is told the one command that starts it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from p2prtc import paths

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Service:
    """Where the unit of one home lives and how the service manager is driven."""

    name: str
    unit_file: Path
    text: str
    enable: tuple[str, ...]
    disable: tuple[str, ...]


def for_home(home: Path) -> Service:
    """The service of the daemon of ``home`` on this platform."""
    suffix = "" if home == Path(paths.default_home()).resolve() else f"-{_digest(home)}"
    command = [sys.executable, "-m", "p2prtc", "daemon"]
    if platform.system() == "Darwin":
        return _launchd(f"org.p2prtc.daemon{suffix}", home, command)
    return _systemd(f"p2prtc{suffix}", home, command)


def install(service: Service, *, start: bool = True) -> str | None:
    """Write the unit and start it; None, or the command that is still to run."""
    service.unit_file.parent.mkdir(parents=True, exist_ok=True)
    service.unit_file.write_text(service.text)
    return _run(service.enable) if start else shlex.join(service.enable)


def uninstall(service: Service) -> str | None:
    """Stop the service and remove its unit; None, or what could not be run."""
    failed = _run(service.disable) if service.unit_file.exists() else None
    service.unit_file.unlink(missing_ok=True)
    return failed


def _systemd(name: str, home: Path, command: list[str]) -> Service:
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    text = (
        "[Unit]\n"
        "Description=p2prtc: live peer-to-peer sync of Jupyter notebooks\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        f"Environment={shlex.quote(f'{paths.HOME_ENV}={home}')}\n"
        f"ExecStart={shlex.join(command)}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )
    return Service(
        name,
        config / "systemd" / "user" / f"{name}.service",
        text,
        ("systemctl", "--user", "enable", "--now", f"{name}.service"),
        ("systemctl", "--user", "disable", "--now", f"{name}.service"),
    )


def _launchd(label: str, home: Path, command: list[str]) -> Service:
    plist = Path.home() / "Library" / "LaunchAgents" / f"{label}.plist"
    arguments = "".join(f"    <string>{part}</string>\n" for part in command)
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" '
        '"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
        '<plist version="1.0"><dict>\n'
        f"  <key>Label</key><string>{label}</string>\n"
        f"  <key>ProgramArguments</key><array>\n{arguments}  </array>\n"
        "  <key>EnvironmentVariables</key><dict>\n"
        f"    <key>{paths.HOME_ENV}</key><string>{home}</string>\n"
        "  </dict>\n"
        "  <key>RunAtLoad</key><true/>\n"
        "  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>\n"
        "</dict></plist>\n"
    )
    return Service(
        label,
        plist,
        text,
        ("launchctl", "load", "-w", str(plist)),
        ("launchctl", "unload", "-w", str(plist)),
    )


def _run(command: tuple[str, ...]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.info("%s: %s", command[0], exc)
        return shlex.join(command)
    if result.returncode != 0:
        logger.info("%s failed: %s", shlex.join(command), result.stderr.strip())
        return shlex.join(command)
    return None


def _digest(home: Path) -> str:
    return hashlib.sha256(str(home).encode()).hexdigest()[:8]

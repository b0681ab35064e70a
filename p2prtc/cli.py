"""The ``p2prtc`` command: click commands that hand work to the daemon and print results.

Every error reaches the user as one line on stderr and the exit code it carries
(``P2PError.exit_code``, see ``errors.ExitCode``).
``--json`` output is stable: see docs/cli.md.
"""

from __future__ import annotations

import collections
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from p2prtc import __version__, control, paths
from p2prtc.core.codes import complete_code, parse_code
from p2prtc.core.names import check_name, short_label
from p2prtc.errors import ExitCode, P2PError
from p2prtc.join_progress import JoinProgress, megabytes

# A command's own start is part of what its user waits for (a warm `join` is over in a
# fifth of a second, docs/benchmarks.md): what only some commands need is imported in
# them, and nothing here imports the daemon package (p2prtc.daemon), except the `daemon`
# command and the check of settings given in the environment (_apply_settings).

_START_TIMEOUT_S = 15.0
# Bounds of an invitation: a code stays short-lived and human.
MAX_WORDS = 8
MAX_EXPIRES_MIN = 7 * 24 * 60.0
MAX_USES = 100


class NoLogYet(P2PError):
    """The daemon has not written a log in this home yet."""


class DaemonDidNotStart(P2PError):
    """The p2prtc daemon did not start; see its log file."""

    exit_code = ExitCode.DAEMON_UNREACHABLE


def _home() -> Path:
    return paths.home()


def _fail(exc: P2PError) -> NoReturn:
    """One line on stderr and the error's exit code; with --json, a JSON error on stdout."""
    if _json_requested():
        error = {"kind": type(exc).__name__, "message": exc.message, "exit_code": exc.exit_code}
        click.echo(json.dumps({"error": error}, indent=2, sort_keys=True))
    click.echo(f"p2prtc: {exc.message}", err=True)
    sys.exit(exc.exit_code)


def _json_requested() -> bool:
    context = click.get_current_context(silent=True)
    return bool(context is not None and context.params.get("as_json"))


def _call(request: dict[str, Any], timeout: float | None = control.DEFAULT_TIMEOUT) -> Any:
    _apply_settings()
    try:
        return control.call(_home(), request, timeout=timeout)
    except P2PError as exc:
        _fail(exc)


def _ensure_daemon() -> None:
    """Start the background daemon for this home unless one answers already."""
    home = _home()
    try:
        control.call(home, {"cmd": "ping"}, timeout=5)
        _apply_settings()
        return
    except control.DaemonNotRunning:
        pass
    except P2PError as exc:
        _fail(exc)
    (click.get_current_context().find_root().obj or {})["settings_checked"] = True  # ours
    # A daemon still stopping (its socket closed, its lock held) exits first: one started
    # meanwhile would find the home taken and quit.
    deadline = time.monotonic() + control.EXIT_WAIT_S + _START_TIMEOUT_S
    started = False
    while time.monotonic() < deadline:
        if not started and not control.daemon_process_holds(home):
            _start_daemon_process(home)
            started = True
        try:
            control.call(home, {"cmd": "ping"}, timeout=5)
            return
        except (control.DaemonNotRunning, control.DaemonGone):
            time.sleep(0.05)
    _fail(DaemonDidNotStart(str(paths.log_file(home))))


def _start_daemon_process(home: Path) -> None:
    """The background daemon, detached, logging to the home's log file."""
    # The log is the daemon's state: owner only, whatever this shell's umask says.
    log_fd = os.open(paths.log_file(home), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(log_fd, 0o600)
    # `p2prtc -v join ...` starts a daemon that logs at debug level (its phases, timed).
    verbose = ["-v"] if _verbose() else []
    import subprocess

    with open(os.devnull, "rb") as devnull, os.fdopen(log_fd, "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "p2prtc", *verbose, "daemon"],
            stdin=devnull,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, paths.HOME_ENV: str(home)},
        )


def _verbose() -> bool:
    context = click.get_current_context(silent=True)
    return bool(context is not None and (context.find_root().obj or {}).get("verbose"))


def _read_code() -> str:
    """The join code from a prompt with word completion, or the first line of stdin."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().strip()
    try:
        import readline
    except ImportError:  # no readline (some platforms): a plain prompt
        return str(click.prompt("Join code"))
    readline.set_completer_delims(" ")
    readline.parse_and_bind("tab: complete")
    readline.set_completer(_completer)
    return input("Join code (Tab completes words): ").strip()


def _completer(text: str, state: int) -> str | None:
    matches = complete_code(text)
    return matches[state] if state < len(matches) else None


def _emit(as_json: bool, payload: dict[str, Any], text: str) -> None:
    payload = {key: value for key, value in payload.items() if key != "ok"}
    click.echo(json.dumps(payload, indent=2, sort_keys=True) if as_json else text)


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


class _Command(click.Group):
    """The command group: every usage error is one line too (``p2prtc: ...``, exit 2)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "p2prtc"
            click.echo(f"p2prtc: {exc.format_message()} (see {where} -h)", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"p2prtc: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("p2prtc: aborted", err=True)
            sys.exit(1)


@click.group(cls=_Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="p2prtc")
@click.option(
    "-v", "--verbose", count=True, help="Debug logging (the daemon this command runs or starts)."
)
@click.option("--signal", multiple=True, help="Signaling relay URL (repeatable).")
@click.option("--stun", multiple=True, help="STUN server URL, e.g. stun:host:3478.")
@click.option("--turn", multiple=True, help="TURN server URL, e.g. turn:host:3478.")
@click.option("--turn-user", help="TURN username.")
@click.option(
    "--turn-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the TURN password (or set P2PRTC_TURN_CREDENTIAL; never on argv).",
)
@click.option("--relay-only", is_flag=True, help="Connect only through the TURN relay.")
@click.option("--no-mdns", is_flag=True, help="No LAN discovery (WAN-only daemon).")
@click.option("--interface", multiple=True, help="IPv4 address to use (repeatable).")
@click.option(
    "--peer", multiple=True, metavar="HOST:PORT", help="A daemon to dial directly (repeatable)."
)
@click.pass_context
def main(
    ctx: click.Context,
    verbose: int,
    signal: tuple[str, ...],
    stun: tuple[str, ...],
    turn: tuple[str, ...],
    turn_user: str | None,
    turn_password_file: Path | None,
    relay_only: bool,
    no_mdns: bool,
    interface: tuple[str, ...],
    peer: tuple[str, ...],
) -> None:
    """Keep a Jupyter notebook identical on several machines, live, peer to peer.

    Network options set the daemon's environment (see README): they apply to the daemon
    that this command starts, or to `p2prtc daemon`. A running daemon dials the --peer
    daemons from then on, and says so; for any other setting it runs without, the
    command warns and prints the restart that applies it.
    """
    ctx.obj = {"verbose": verbose, "restart_args": _given_options(ctx)}
    settings = {
        "P2PRTC_SIGNAL": ",".join(signal),
        "P2PRTC_ICE_SERVERS": ",".join((*stun, *turn)),
        "P2PRTC_TURN_USERNAME": turn_user or "",
        "P2PRTC_TURN_CREDENTIAL": _read_secret_file(turn_password_file),
        "P2PRTC_RELAY_ONLY": "1" if relay_only else "",
        "P2PRTC_MDNS": "0" if no_mdns else "",
        "P2PRTC_INTERFACES": ",".join(interface),
        "P2PRTC_PEERS": ",".join(peer),
    }
    os.environ.update({name: value for name, value in settings.items() if value})
    ctx.obj["from_options"] = {name for name, value in settings.items() if value}


# The option that sets each setting, to name it as the user gave it.
_OPTION_OF = {
    "P2PRTC_SIGNAL": "--signal",
    "P2PRTC_ICE_SERVERS": "--stun/--turn",
    "P2PRTC_TURN_USERNAME": "--turn-user",
    "P2PRTC_RELAY_ONLY": "--relay-only",
    "P2PRTC_MDNS": "--no-mdns",
    "P2PRTC_INTERFACES": "--interface",
}


def _given_options(ctx: click.Context) -> list[str]:
    """The global options of this command line, as a restart of the daemon repeats them."""
    given: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if not isinstance(param, click.Option) or param.name == "verbose" or not value:
            continue
        flag = param.opts[-1]
        if param.is_flag:
            given.append(flag)
        else:
            given += [f"{flag}={item}" for item in (value if param.multiple else [value])]
    return given


def _apply_settings() -> None:
    """Once per command that finds a daemon running: hand it the peers this command names,
    and warn in one line about the settings it runs without (they need a restart)."""
    state = click.get_current_context().find_root().obj
    if state is None or state.get("settings_checked"):
        return
    state["settings_checked"] = True
    if not _settings_in_environment():
        return  # the usual case: nothing to compare, and the daemon's config not imported
    from p2prtc.daemon.config import (
        FIXED_SETTINGS,
        BadSetting,
        DaemonConfig,
        settings_not_applied,
    )

    try:
        peers = [f"{host}:{port}" for host, port in DaemonConfig.from_env().peers]
    except BadSetting as exc:  # what a daemon started here would refuse too
        _fail(exc)
    if not peers and not any(os.environ.get(name) for name in FIXED_SETTINGS):
        return
    try:
        answer = control.call(_home(), {"cmd": "settings", "peers": peers})
    except control.DaemonNotRunning:
        return
    except P2PError:  # a daemon that predates the request has nothing to compare
        return
    differing = settings_not_applied(os.environ, answer["settings"])
    for key in answer["added_peers"]:
        click.echo(f"p2prtc: the running daemon dials {key} too (until it stops)", err=True)
    if differing:
        names = [_OPTION_OF[v] if v in state["from_options"] else v for v in differing]
        restart = shlex.join(["p2prtc", *state["restart_args"], "start"])
        click.echo(
            f"p2prtc: warning: the running daemon does not run with {', '.join(names)} as"
            f" given here; to apply: p2prtc stop && {restart}",
            err=True,
        )


def _settings_in_environment() -> bool:
    """Whether the environment sets any of the daemon's settings (all are ``P2PRTC_``
    variables; the home only says which daemon)."""
    return any(
        value and name.startswith("P2PRTC_") and name != paths.HOME_ENV
        for name, value in os.environ.items()
    )


def _read_secret_file(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise click.BadParameter(
            f"{path}: {exc.strerror}", param_hint="--turn-password-file"
        ) from None


def invitation_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options of a new invitation: share and invite take the same ones."""
    for option in reversed(
        (
            click.option(
                "--words",
                default=2,
                show_default=True,
                type=click.IntRange(1, MAX_WORDS),
                help="Words in the code (8 bits of secret each).",
            ),
            click.option(
                "--expires",
                default=15.0,
                show_default=True,
                type=click.FloatRange(0, MAX_EXPIRES_MIN, min_open=True),
                help="Lifetime, minutes.",
            ),
            click.option(
                "--uses",
                default=1,
                show_default=True,
                type=click.IntRange(1, MAX_USES),
                help="Joins the code allows.",
            ),
            json_option,
        )
    ):
        command = option(command)
    return command


def _code_text(answer: dict[str, Any], expires_min: float) -> str:
    """The code alone when piped (scripts read it); on a terminal, what to do next."""
    code = str(answer["code"])
    if not sys.stdout.isatty():
        return code
    return (
        f"{code}\n\nOn the other machine run:  p2prtc join {code}\n"
        f"The code works for {expires_min:g} minutes; p2prtc status shows who joined."
    )


def _invitation(cmd: str, path: Path, words: int, expires: float, uses: int) -> Any:
    request = {"cmd": cmd, "path": str(path.resolve()), "words": words}
    return _call({**request, "expires_s": expires * 60, "uses": uses})


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@invitation_options
def share(path: Path, words: int, expires: float, uses: int, as_json: bool) -> None:
    """Share the notebook PATH and print a join code for another machine."""
    _ensure_daemon()
    answer = _invitation("share", path, words, expires, uses)
    _emit(as_json, answer, _code_text(answer, expires))


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@invitation_options
def invite(path: Path, words: int, expires: float, uses: int, as_json: bool) -> None:
    """Make a new join code for the already shared notebook PATH."""
    answer = _invitation("invite", path, words, expires, uses)
    _emit(as_json, answer, _code_text(answer, expires))


@main.command()
@click.argument("code", required=False)
@click.argument("dest", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite DEST if it exists and differs.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for peers.")
@json_option
def join(code: str | None, dest: Path | None, force: bool, timeout: float, as_json: bool) -> None:
    """Join a shared notebook with the CODE its owner gave you; writes DEST once synced.

    Without CODE (or with "-") the code is asked for, with word completion on a terminal,
    or read from stdin: then it never shows in the process list. While it waits, join
    shows each step (a progress bar on a terminal, plain lines otherwise; nothing with
    --json). A DEST holding the same notebook is adopted; another one is kept unless
    --force, and the retry with --force takes the same code.
    """
    if dest is not None and not dest.resolve().parent.is_dir():
        # Before anything: no daemon started, no code spent.
        raise click.BadParameter(
            f"the folder {dest.resolve().parent} does not exist", param_hint="'DEST'"
        )
    text = _read_code() if code in (None, "-") else str(code)
    try:
        parse_code(text)  # a mistyped code fails here, before any daemon starts
    except P2PError as exc:
        _fail(exc)
    _ensure_daemon()
    request = {
        "cmd": "join",
        "code": text,
        "dest": str(dest.resolve()) if dest else None,
        "cwd": os.getcwd(),
        "force": force,
        "timeout_s": timeout,
    }
    progress = None if as_json else JoinProgress(sys.stdout, terminal=sys.stdout.isatty())
    try:
        answer = control.call(_home(), request, timeout=timeout + 10, on_event=progress)
    except P2PError as exc:
        if progress is not None:
            progress.finish()  # a bar being drawn ends before the error's line
        _fail(exc)
    finally:  # Ctrl-C too (the daemon finishes the join in the background)
        if progress is not None:
            progress.finish()
    kept = "the file there already held it" if answer.get("adopted") else "synced"
    text = f"joined: {answer['path']} ({megabytes(answer.get('bytes', 0))}, {kept})"
    _emit(as_json, answer, text)


@main.command()
@json_option
def status(as_json: bool) -> None:
    """Show shares, peers, sync state and errors."""
    answer = _call({"cmd": "status"})
    _emit(as_json, answer, _status_text(answer))


def _status_text(status: dict[str, Any]) -> str:
    daemon = status["daemon"]
    lines = [
        f"daemon {short_label(daemon['id'], daemon.get('name'))} {daemon['version']}"
        f" pid {daemon['pid']} home {daemon['home']}",
        f"rendezvous port {daemon.get('rendezvous_port') or '?'}",
    ]
    for item in status["shares"]:
        lines.append(f"{item['path']}  [{item['id'][:8]}] {item['state']}")
        if item.get("last_error"):
            lines.append(f"  error: {item['last_error']}")
        for invitation in item.get("invitations", []):
            lines.append(
                f"  invitation {invitation['nameplate']}-…  uses left {invitation['uses_left']}"
                f"  failed attempts {invitation['wrong_attempts_used']}"
                f"  expires in {invitation['expires_in_s']:.0f}s"
            )
        for retired in item.get("retired_invitations", []):
            if retired["reason"] == "burned":
                lines.append(
                    f"  invitation {retired['nameplate']}-… burned after"
                    f" {retired['wrong_attempts_used']} failed attempts (someone may be guessing)"
                )
        for peer in item["peers"]:
            state = "synced" if peer["synced"] else ("connected" if peer["connected"] else "down")
            lines.append(
                f"  peer {short_label(peer['id'], peer.get('name'))} {peer.get('address') or '?'}"
                f" {state} via {peer.get('path_type') or '?'}"
            )
        standing = item.get("standing", "member")
        if standing != "member" or not item["peers"]:
            lines.append(f"  {_STANDING.get(standing, 'no peers connected')}")
        for room in item.get("rooms", []):
            lines.append(f"  live Jupyter room: {room}")
        for found in item.get("concurrent_edits", []):
            when = time.strftime("%H:%M", time.localtime(found["at"]))
            lines.append(f"  {_concurrent_text(found)} at {when}")
    if not status["shares"]:
        lines.append("no shares")
    return "\n".join(lines)


# What a share without peers says, by this daemon's standing in it (status "standing").
_STANDING = {
    "removed": "you were removed from this share (p2prtc leave PATH stops it)",
    "outdated": "the share's secret was rotated while this daemon was offline (a member was"
    " removed): a member's new invitation lets it back in",
    "alone": "no members left: the others left or were removed (p2prtc invite PATH)",
}


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def leave(path: Path, as_json: bool) -> None:
    """Stop syncing PATH (the file stays as it is)."""
    answer = _call({"cmd": "leave", "path": str(path.resolve())})
    _emit(as_json, answer, f"left: {answer['path']}")


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def members(path: Path, as_json: bool) -> None:
    """List the members of the share PATH: daemon ids and names."""
    answer = _call({"cmd": "members", "path": str(path.resolve())})
    lines = [
        f"{m['id']}  {m.get('name') or '(name unknown)'}{'  (this daemon)' if m['self'] else ''}"
        f"{'  connected' if m['connected'] else ''}"
        for m in answer["members"]
    ]
    _emit(as_json, answer, "\n".join(lines))


@main.command("log")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-n", "--entries", default=20, show_default=True, type=click.IntRange(1), help="How many."
)
@json_option
def change_log(path: Path, entries: int, as_json: bool) -> None:
    """Recent changes of the shared notebook PATH: who, when, which cells (newest first)."""
    answer = _call({"cmd": "log", "path": str(path.resolve()), "limit": entries})
    _emit(as_json, answer, _log_text(answer, entries))


_LOG_KINDS = {
    "save": "saved",
    "peer": "edited",
    "jupyter": "typed in Jupyter",
    "share": "shared",
    "join": "sent the copy this daemon joined with",
}


def _log_text(answer: dict[str, Any], asked: int) -> str:
    lines, own = [], answer["daemon_id"]
    for entry in answer["entries"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["at"]))
        kind = _LOG_KINDS.get(entry["kind"], entry["kind"])
        cells = [_cell_text(cell) for cell in entry["cells"]]
        who = entry["member_label"] + (" (this daemon)" if entry["member"] == own else "")
        lines.append(f"{when}  {who}  {kind}" + (":" if cells else ""))
        lines += [f"    {cell}" for cell in cells]
        lines += [f"    {_concurrent_text(found)}" for found in entry["concurrent"]]
    if not lines:
        lines.append("no changes logged yet")
    if len(answer["entries"]) == asked:
        lines.append(f"(older changes: -n; the log keeps the newest {answer['max_entries']})")
    return "\n".join(lines)


def _cell_where(cell: dict[str, Any]) -> str:
    if cell["index"] is None:
        return f"a deleted cell [{cell['id'][:8]}]"
    return f"cell {cell['index']} [{cell['id'][:8]}]"


def _cell_text(cell: dict[str, Any]) -> str:
    parts = ", ".join(cell["parts"])
    line = f" {cell['first_line']!r}" if cell.get("first_line") else ""
    return f"{_cell_where(cell)}{line} ({parts})"


def _concurrent_text(found: dict[str, Any]) -> str:
    """E.g. "concurrent edits merged in cell 12 (alice, bob)"."""
    where = _cell_where(found)
    return f"concurrent edits merged in {where} ({', '.join(found['member_labels'])})"


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("member")
@json_option
def remove(path: Path, member: str, as_json: bool) -> None:
    """Remove MEMBER (an id or prefix) from the share PATH and rotate its secret."""
    answer = _call({"cmd": "remove", "path": str(path.resolve()), "member": member})
    text = f"removed {answer['removed']}; the members reached took the new secret"
    if answer.get("not_reached"):
        text += (
            f"\nnot reached (offline): {', '.join(answer['not_reached'])}:"
            " they will need a new invitation (p2prtc invite)"
        )
    _emit(as_json, answer, text)


@main.group()
def config() -> None:
    """This daemon's settings kept in its home (P2PRTC_HOME)."""


@config.command("name")
@click.argument("name", required=False)
@json_option
def config_name(name: str | None, as_json: bool) -> None:
    """Print this daemon's name, or set it to NAME (others see it in status and members)."""
    from p2prtc.daemon.names import configured_name, daemon_name, save_name

    home = _home()
    if name is not None:
        try:
            save_name(home, check_name(name))
        except P2PError as exc:
            _fail(exc)
        _warn_if_running_with_other_name(home, name)
    current = daemon_name(home)
    configured = configured_name(home) is not None
    _emit(as_json, {"name": current, "configured": configured}, current)


def _warn_if_running_with_other_name(home: Path, name: str) -> None:
    """The name goes in the daemon's handshakes, fixed for its run: a restart applies it."""
    try:
        running = control.call(home, {"cmd": "status"})["daemon"].get("name")
    except P2PError:  # none running: the next start uses the new name
        return
    if running != name:
        click.echo(
            f"p2prtc: warning: the running daemon goes by {running!r} until it restarts:"
            " p2prtc stop && p2prtc start",
            err=True,
        )


@main.command()
@json_option
def start(as_json: bool) -> None:
    """Start the background daemon (nothing to do when it runs already)."""
    _ensure_daemon()
    daemon = _call({"cmd": "status"})["daemon"]
    _emit(as_json, {"pid": daemon["pid"]}, f"daemon running, pid {daemon['pid']}")


@main.command()
@json_option
def stop(as_json: bool) -> None:
    """Stop the background daemon (shares resume when it starts again)."""
    home = _home()
    try:
        answer = control.call(home, {"cmd": "stop"})
        # Stopped means exited: until then it holds the home, and a `start` would fail.
        control.wait_until_exited(home, control.EXIT_WAIT_S)
    except control.DaemonNotRunning:
        answer = {"stopping": False}
    except P2PError as exc:
        _fail(exc)
    _emit(as_json, answer, "daemon stopped" if answer["stopping"] else "no daemon was running")


@main.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the daemon logs.")
@click.option("-n", "--lines", default=50, show_default=True, type=click.IntRange(0))
def logs(follow: bool, lines: int) -> None:
    """Show the daemon's log (the last LINES lines)."""
    log = paths.log_file(_home())
    if not log.exists():
        _fail(NoLogYet(str(log)))
    with log.open(errors="replace") as stream:
        for line in collections.deque(stream, maxlen=lines):
            click.echo(line, nl=False)
        while follow:
            line = stream.readline()
            if line:
                click.echo(line, nl=False)
            else:
                time.sleep(0.2)


@main.group()
def service() -> None:
    """Run the daemon as a user service (systemd, launchd): shares survive reboots."""


@service.command("install")
@click.option("--no-start", is_flag=True, help="Only write the unit file.")
def service_install(no_start: bool) -> None:
    """Install and start the user service of this home's daemon."""
    from p2prtc import service as p2prtc_service

    unit = p2prtc_service.for_home(_home())
    pending = p2prtc_service.install(unit, start=not no_start)
    click.echo(f"wrote {unit.unit_file}")
    if pending:
        click.echo(f"could not start it here; run: {pending}")
    else:
        click.echo(f"service {unit.name} enabled: the daemon starts at login")


@service.command("uninstall")
def service_uninstall() -> None:
    """Stop and remove the user service of this home's daemon."""
    from p2prtc import service as p2prtc_service

    unit = p2prtc_service.for_home(_home())
    pending = p2prtc_service.uninstall(unit)
    click.echo(f"removed {unit.unit_file}")
    if pending:
        click.echo(f"could not stop it here; run: {pending}")


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script of SHELL (e.g. eval "$(p2prtc completion bash)")."""
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)
    assert completer is not None  # click ships all three
    click.echo(completer(main, {}, "p2prtc", "_P2PRTC_COMPLETE").source())


@main.command()
@click.pass_context
def daemon(ctx: click.Context) -> None:
    """Run the daemon in the foreground."""
    import logging

    from p2prtc.daemon.main import run_daemon  # only this command needs it

    level = logging.DEBUG if ctx.obj["verbose"] else logging.INFO
    try:
        run_daemon(_home(), log_level=level)
    except P2PError as exc:
        _fail(exc)


@main.command()
def demo() -> None:
    """Two daemons on this machine (loopback only): share, join, edit, watch it sync."""
    from p2prtc.demo import run_demo  # only this command needs it

    try:
        run_demo(echo=click.echo)
    except P2PError as exc:
        _fail(exc)

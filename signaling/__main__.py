"""`p2prtc-signal` / `python -m signaling`: run the relay until SIGTERM or SIGINT.

Once listening it prints `listening on ws://HOST:PORT` (one line per listening socket,
flushed) on stdout, so `--port 0` can be used and the chosen port read back.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import signal
import ssl
import sys
from urllib.parse import urlsplit

from signaling.limits import Limits
from signaling.logs import configure_logging
from signaling.server import HEALTH_PATH, SignalingServer


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2prtc-signal",
        description=(
            "y-webrtc compatible WebSocket signaling relay. "
            f"Health and counters: GET {HEALTH_PATH} on the same port."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=4444, help="port to bind; 0 picks a free one")
    parser.add_argument("--certfile", help="TLS certificate chain (PEM): serve wss:// directly")
    parser.add_argument("--keyfile", help="TLS private key (PEM), with --certfile")
    parser.add_argument(
        "--real-ip-header",
        metavar="HEADER",
        help="behind a reverse proxy: take the client address from this header "
        "(e.g. X-Forwarded-For) for the per-address limit",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="share topics with the other relays using this Redis (redis://HOST:PORT/DB, "
        "rediss:// for TLS); needs the `redis` package",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    limits = parser.add_argument_group("limits")
    for limit in dataclasses.fields(Limits):
        limits.add_argument(
            _flag(limit.name),
            type=type(limit.default),
            default=limit.default,
            help=limit.metadata["help"],
        )
    return parser


def _limits_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Limits:
    values = {limit.name: getattr(args, limit.name) for limit in dataclasses.fields(Limits)}
    try:
        return Limits(**values)
    except ValueError as exc:
        parser.error(str(exc))


def _ssl_context_from(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> ssl.SSLContext | None:
    if args.certfile is None:
        if args.keyfile is not None:
            parser.error("--keyfile needs --certfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except (OSError, ssl.SSLError) as exc:
        parser.error(f"cannot load the TLS certificate: {exc}")
    return context


def _redis_url_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    if args.redis is None:
        return None
    if urlsplit(args.redis).scheme not in ("redis", "rediss", "unix"):
        parser.error("--redis needs a redis://, rediss:// or unix:// URL")
    if importlib.util.find_spec("redis") is None:
        parser.error("--redis needs the `redis` package: pip install redis")
    return str(args.redis)


async def _serve(server: SignalingServer) -> None:
    try:
        await server.start()
    except OSError as exc:
        sys.exit(f"p2prtc-signal: cannot listen: {exc}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Only now: whoever reads this line may stop us with a signal at once.
    for url in server.urls:
        print(f"listening on {url}", flush=True)
    await stop.wait()
    await server.close()


def main() -> None:
    """Parse the command line and run the relay in the foreground."""
    parser = _build_parser()
    args = parser.parse_args()
    limits = _limits_from(args, parser)
    ssl_context = _ssl_context_from(args, parser)
    configure_logging(args.log_level)
    server = SignalingServer(
        args.host,
        args.port,
        limits,
        ssl_context=ssl_context,
        real_ip_header=args.real_ip_header,
        redis_url=_redis_url_from(args, parser),
    )
    asyncio.run(_serve(server))


if __name__ == "__main__":
    main()

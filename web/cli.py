"""The ``tenure`` command: the engine's commands (:mod:`service.faces.cli`) plus ``serve``.

``serve`` lives here because it starts the web app; the engine never imports this package.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.errors import InvalidInput
from service.faces import cli, client, logs

DEFAULT_PORT = 8000
DEFAULT_FRAGMENT_TTL_S = 0.25


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv, extend=add_serve)


def add_serve(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], help="the web app (and an embedded supervisor) under uvicorn")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None,
                   help=f"port (default: $TENURE_PORT, else {DEFAULT_PORT})")
    p.add_argument("--concurrency", type=int, help="tasks the embedded supervisor runs at once (default 64)")
    p.add_argument("--no-worker", action="store_true",
                   help="serve pages and API only; separate `tenure worker`s run the tasks")
    cli.memory_flag(p)
    cli.queues_flag(p)
    cli.log_flags(p)
    p.set_defaults(command="serve", handler=cmd_serve)


def fragment_ttl() -> float:
    """``TENURE_FRAGMENT_TTL_S``: how long one status answer is shared by everyone polling (see web.shared)."""
    raw = os.environ.get("TENURE_FRAGMENT_TTL_S", str(DEFAULT_FRAGMENT_TTL_S))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 10:
        raise InvalidInput(f"TENURE_FRAGMENT_TTL_S must be seconds from 0 to 10, got {raw!r}")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    cli.setup_logging(args.log_level, args.log_format)
    json_logs = logs.chosen_format(args.log_format) == "json"
    port = resolve_port(args.port)
    url = cli.db_url(args)
    if args.no_worker and args.queues is not None:
        raise InvalidInput("--queues chooses what the embedded worker takes; with --no-worker there is none")
    settings = cli.settings_from(args, concurrency=args.concurrency)
    # Before anything starts (the database, a supervisor): is the address free at all?
    check_port_free(args.host, port)
    import uvicorn

    from web.app import create_app

    client.open(url).close()  # migrate (or refuse a foreign database) before serving anything
    app = create_app(url, supervise=not args.no_worker, settings=settings,
                     allowed_hosts=[args.host] if args.host not in ("0.0.0.0", "::") else [],
                     fragment_ttl_s=fragment_ttl())
    if json_logs:  # every line JSON, for the pipeline that reads them
        logging.getLogger("tenure.web").info("web.serving url=%s db=%s", f"http://{args.host}:{port}/", url)
    else:
        print(f"tenure: serving http://{args.host}:{port}/ on {url}", file=sys.stderr, flush=True)
    # uvicorn turns SIGTERM/SIGINT into a graceful lifespan shutdown, which stops the supervisor.
    # With JSON logs uvicorn keeps no logging config of its own: its lines go through the JSON formatter.
    log_config = None if json_logs else uvicorn.config.LOGGING_CONFIG
    uvicorn.run(app, host=args.host, port=port, log_level=args.log_level.lower(),
                timeout_graceful_shutdown=10, access_log=False, log_config=log_config)
    return 0


def resolve_port(flag: int | None) -> int:
    """--port, else TENURE_PORT, else 8000. Raises InvalidInput for a port out of range."""
    raw: Any = flag
    where = "--port"
    if raw is None:
        raw, where = os.environ.get("TENURE_PORT") or DEFAULT_PORT, "TENURE_PORT"
    try:
        port = int(raw)
    except ValueError:
        raise InvalidInput(f"{where} must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise InvalidInput(f"{where} must be between 1 and 65535, got {port}")
    return port


def check_port_free(host: str, port: int) -> None:
    """Raises InvalidInput, naming the process that holds it where Linux can tell, if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            holder = port_holder(port)
            who = f" (by {holder})" if holder else ""
            raise InvalidInput(f"cannot serve on {host}:{port}: {exc.strerror or exc}{who}; choose another "
                               "port with --port or TENURE_PORT (make run PORT=8001)") from None


def port_holder(port: int) -> str | None:
    """"pid 123: python -m http.server" for the process listening on ``port``, if /proc shows it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                    return f"pid {proc.name}: {command[:80]}"
    return None

"""Command line: `gateway serve`, `check-config`, `hash-key`, `explain` and `reload`."""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import math
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from gateway.config import ConfigError, GatewayConfig, load_config, redacted, workers_problems


def _default_config() -> str:
    return os.environ.get("GATEWAY_CONFIG", "config.yaml")


def _load(path: str) -> GatewayConfig | None:
    """The config, or None after printing why it is invalid."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"gateway: {path}: {exc}", file=sys.stderr)
        return None


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    config = _load(args.config)
    if config is None:
        return 1
    host = args.host or os.environ.get("GATEWAY_HOST") or config.server.host
    port = int(args.port or os.environ.get("GATEWAY_PORT") or config.server.port)
    workers = args.workers or config.server.workers
    if workers == 1:  # in memory: multiprocess mode costs ~15 us a request more (its file writes)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    problems = workers_problems(config, workers)
    if problems:
        print(f"gateway: {args.config}: cannot serve with --workers {workers}:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,  # the gateway writes its own access event
        "log_level": "warning",
        "server_header": False,
        "proxy_headers": False,  # the gateway does not use the client address; saves ~4 % CPU
        # A backstop only: the drain (gateway/drain.py) ends what is left at drain_seconds.
        "timeout_graceful_shutdown": math.ceil(config.server.drain_seconds) + 2,
    }
    from gateway.observability import configure_logging, get_logger

    configure_logging(config.logging)
    log = get_logger()
    if not (config.auth.api_keys or config.auth.keys) and not is_loopback(host):
        log.warning(
            "auth_off_on_network",
            message=f"auth is off and the gateway listens on {host}: anyone who can reach "
            "it may call it; set GATEWAY_API_KEYS or auth.keys",
        )
    log.info("listening", url=f"http://{host}:{port}", workers=workers, config=args.config)
    if workers > 1:
        from gateway.workers import Supervisor, metrics_dir

        os.environ["GATEWAY_CONFIG"] = os.path.abspath(args.config)
        os.environ["GATEWAY_WORKERS"] = str(workers)  # a reload checks its config against it
        # Each worker writes its metrics there and /metrics adds them all up.
        with metrics_dir():
            uv = uvicorn.Config("gateway.app:app_from_env", factory=True, workers=workers,
                                **options)  # fmt: skip
            Supervisor(uv, sockets=[uv.bind_socket()]).run()
    else:
        from gateway.app import create_app

        uvicorn.run(create_app(config, args.config), **options)
    return 0


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def hash_key(args: argparse.Namespace) -> int:
    """Print the sha256 of a key read from stdin, for auth.keys[].sha256."""
    key = sys.stdin.readline().strip()
    if not key:
        print("gateway hash-key: no key on stdin (echo -n KEY | gateway hash-key)", file=sys.stderr)
        return 1
    print(hashlib.sha256(key.encode()).hexdigest())
    return 0


def explain_request(args: argparse.Namespace) -> int:
    """Print the routing decision for a request body, calling no upstream."""
    import asyncio

    import orjson

    config = _load(args.config)
    if config is None:
        return 1
    try:
        raw = sys.stdin.buffer.read() if args.request == "-" else Path(args.request).read_bytes()
    except OSError as exc:
        print(f"gateway explain: cannot read {args.request}: {exc.strerror}", file=sys.stderr)
        return 1

    async def run() -> tuple[int, dict[str, Any]]:
        from gateway.explain import explain
        from gateway.runtime import Gateway

        gateway = Gateway(config)
        try:
            return await explain(gateway, raw, args.endpoint, args.key)
        finally:
            await gateway.aclose()

    status, report = asyncio.run(run())
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0 if status == 200 and "error" not in report else 1


def reload(args: argparse.Namespace) -> int:
    """Ask a running gateway to reload its config file (POST /admin/reload)."""
    import httpx

    key = args.admin_key or os.environ.get("GATEWAY_ADMIN_KEY", "")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.post(args.url.rstrip("/") + "/admin/reload", headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        print(f"gateway reload: {args.url}: {exc}", file=sys.stderr)
        return 1
    body = (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    if response.status_code == 200:
        print("reloaded")
        return 0
    errors = body.get("errors") or [body.get("error", {}).get("message", response.text)]
    print(f"gateway reload: refused (HTTP {response.status_code})", file=sys.stderr)
    for error in errors:
        print(f"  {error}", file=sys.stderr)
    if response.status_code in (401, 403):
        print("  an admin key is needed: --admin-key KEY or $GATEWAY_ADMIN_KEY", file=sys.stderr)
    return 1


def check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.path)
    except ConfigError as exc:
        print(f"{args.path}: invalid config", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    print(f"# {args.path}: valid; resolved values, secrets masked")
    print(yaml.safe_dump(redacted(config), sort_keys=False), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", default=_default_config(), help="config file (default: "
                   "$GATEWAY_CONFIG or ./config.yaml)")  # fmt: skip
    p.add_argument("--host", help="listen address (default: $GATEWAY_HOST or server.host)")
    p.add_argument("--port", type=int, help="listen port (default: $GATEWAY_PORT or server.port)")
    p.add_argument("--workers", type=int, help="worker processes (default: server.workers)")
    p.set_defaults(func=serve)
    c = sub.add_parser("check-config", help="validate a config file and print it resolved")
    c.add_argument("path", nargs="?", default=_default_config())
    c.set_defaults(func=check_config)
    h = sub.add_parser("hash-key", help="read a key on stdin, print its sha256 for auth.keys")
    h.set_defaults(func=hash_key)
    e = sub.add_parser("explain", help="the routing decision for a request, no upstream call")
    e.add_argument("request", help="a JSON request body file, or - for stdin")
    e.add_argument("--config", default=_default_config())
    e.add_argument("--endpoint", default="chat", choices=["chat", "completions", "embeddings"])
    e.add_argument("--key", help="decide as this virtual key (its name)")
    e.set_defaults(func=explain_request)
    r = sub.add_parser("reload", help="make a running gateway reload its config file")
    r.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's address")
    r.add_argument("--admin-key", help="an admin key (default: $GATEWAY_ADMIN_KEY)")
    r.set_defaults(func=reload)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

"""``simclr serve``'s settings: the transport's own (:class:`ServerOptions`) beside the core's
(``serving.core.config.ServiceConfig``); both make the command's flags and ``SIMCLR_*`` variables."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from simclr_search.serving.core.config import ServiceConfig
from simclr_search.settings import add_arguments, from_args, setting

ENV_PREFIX = "SIMCLR_"


@dataclass
class ServerOptions:
    address: str = setting("127.0.0.1:50051", "host:port to listen on", group="server")
    metrics_port: int = setting(
        9464, "Prometheus metrics (HTTP, no auth) on this port; 0 disables", group="server"
    )
    http: bool = setting(
        True,
        "the HTTP/JSON API and the web page beside gRPC (same host, token, limits and metrics)",
        group="server",
    )
    http_port: int = setting(8080, "HTTP port (0: any free port)", group="server")
    metrics_host: str = setting(
        "",
        "interface the metrics listen on (default: the host of --address, so a loopback server "
        "keeps its metrics on loopback too)",
        group="server",
    )
    token: str = setting(
        "",
        "require this bearer token (prefer SIMCLR_TOKEN or --token-file: a flag's value shows "
        "in the process list)",
        group="security",
    )
    token_file: str = setting(
        "",
        "read the bearer token from this file (surrounding whitespace removed)",
        group="security",
    )
    tls_cert: str = setting("", "TLS certificate (PEM); with --tls-key", group="security")
    tls_key: str = setting("", "TLS private key (PEM)", group="security")
    max_concurrent: int = setting(
        64, "calls served at once; more are refused (RESOURCE_EXHAUSTED)", group="server"
    )
    grace_seconds: float = setting(
        60.0,
        "on SIGTERM, seconds in-flight calls get to finish (health watches end at once)",
        group="server",
    )
    log_format: str = setting("text", "log lines as text or JSON", choices=("text", "json"))


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="serve embeddings and reverse image search over gRPC; every flag can also be "
        f"set by its {ENV_PREFIX}<NAME> environment variable",
        add_help=add_help,
    )
    add_arguments(parser, ServiceConfig, ENV_PREFIX)
    add_arguments(parser, ServerOptions, ENV_PREFIX)
    return parser


def config_from_args(args: argparse.Namespace) -> tuple[ServiceConfig, ServerOptions]:
    return from_args(ServiceConfig, args), from_args(ServerOptions, args)


def bearer_token(options: ServerOptions) -> str:
    """The token the server requires ("": none), from ``--token`` or ``--token-file``."""
    if options.token and options.token_file:
        raise ValueError("give --token or --token-file, not both")
    if not options.token_file:
        return options.token
    try:
        token = Path(options.token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read --token-file {options.token_file}: {exc.strerror}") from exc
    if not token:
        raise ValueError(f"--token-file {options.token_file} is empty")
    return token


def host_of(address: str) -> str:
    """The host part of ``host:port`` (``[::1]:50051`` -> ``::1``; ``[::]`` -> ``::``)."""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host

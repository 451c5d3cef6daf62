"""``simclr serve``'s settings: the transport's own (:class:`ServerOptions`) beside the core's
(``serving.core.config.ServiceConfig``); both make the command's flags and ``SIMCLR_*`` variables."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from simclr_search.serving.core.config import ServiceConfig
from simclr_search.settings import add_arguments, from_args, setting

ENV_PREFIX = "SIMCLR_"


@dataclass
class ServerOptions:
    address: str = setting("127.0.0.1:50051", "host:port to listen on", group="server")
    metrics_port: int = setting(9100, "Prometheus metrics port; 0 disables", group="server")
    token: str = setting("", "require this bearer token", group="security")
    tls_cert: str = setting("", "TLS certificate (PEM); with --tls-key", group="security")
    tls_key: str = setting("", "TLS private key (PEM)", group="security")
    max_concurrent: int = setting(
        64, "calls served at once; more are refused (RESOURCE_EXHAUSTED)", group="server"
    )
    grace_seconds: float = setting(
        10.0, "on SIGTERM, seconds in-flight calls get to finish", group="server"
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

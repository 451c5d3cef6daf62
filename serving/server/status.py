"""Domain errors as gRPC status codes: the core's status names (``core.errors``) to ``grpc.StatusCode``."""

from __future__ import annotations

import grpc

from simclr_search.serving.core.errors import status_name


def status_for(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC code for a domain error, or None for an unexpected error (a bug: INTERNAL)."""
    name = status_name(exc)
    return None if name is None else grpc.StatusCode[name]

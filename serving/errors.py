"""Domain errors of the service, and the one place that maps every domain error to a gRPC code."""

from __future__ import annotations

import grpc

from bundle.manifest import BundleError
from index.errors import (
    AlreadyExists,
    IncompatibleSpace,
    InvalidArgument,
    NotFound,
    StorageFailure,
    StoreError,
)


class ServiceError(Exception):
    """Base of the serving layer's own errors."""


class InvalidImage(ServiceError):
    """Image bytes that cannot be used: empty, truncated, unsupported format, too large."""


class BadRequest(ServiceError):
    """A request that is malformed in a way the index does not see (missing oneof, bad JSON)."""


class MissingModel(ServiceError):
    """The loaded bundle has no model for this RPC (e.g. no denoiser)."""


class Overloaded(ServiceError):
    """The server is at its limit of concurrent calls."""


_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (InvalidImage, grpc.StatusCode.INVALID_ARGUMENT),
    (BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (MissingModel, grpc.StatusCode.FAILED_PRECONDITION),
    (IncompatibleSpace, grpc.StatusCode.FAILED_PRECONDITION),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StorageFailure, grpc.StatusCode.UNAVAILABLE),
    (BundleError, grpc.StatusCode.FAILED_PRECONDITION),
    (StoreError, grpc.StatusCode.INVALID_ARGUMENT),
]


def status_for(exc: BaseException) -> grpc.StatusCode | None:
    """The status code for a domain error, or None for an unexpected error (a bug: INTERNAL)."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return None

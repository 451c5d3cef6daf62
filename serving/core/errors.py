"""Domain errors of the service, and the one place that maps every domain error to a status code.

The codes are the canonical RPC status names (``google.rpc.Code``: INVALID_ARGUMENT, NOT_FOUND ...),
free of any transport: the gRPC server turns a name into ``grpc.StatusCode`` and an HTTP front end
would turn it into its HTTP status, so both protocols answer one error alike.
"""

from __future__ import annotations

from simclr_search.bundle.manifest import BundleError
from simclr_search.index.errors import (
    AlreadyExists,
    IncompatibleSpace,
    InvalidArgument,
    NotFound,
    NotSupported,
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


_CODES: list[tuple[type[BaseException], str]] = [
    (InvalidImage, "INVALID_ARGUMENT"),
    (BadRequest, "INVALID_ARGUMENT"),
    (InvalidArgument, "INVALID_ARGUMENT"),
    (NotFound, "NOT_FOUND"),
    (AlreadyExists, "ALREADY_EXISTS"),
    (MissingModel, "FAILED_PRECONDITION"),
    (IncompatibleSpace, "FAILED_PRECONDITION"),
    (Overloaded, "RESOURCE_EXHAUSTED"),
    (StorageFailure, "UNAVAILABLE"),
    (NotSupported, "UNIMPLEMENTED"),
    (BundleError, "FAILED_PRECONDITION"),
    (StoreError, "INVALID_ARGUMENT"),
]


def status_name(exc: BaseException) -> str | None:
    """The canonical status name for a domain error, or None for an unexpected error (a bug:
    INTERNAL)."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return None

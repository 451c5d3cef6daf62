"""Domain errors of the vector store. The gRPC layer maps each to one status code, in one place."""

from __future__ import annotations


class StoreError(Exception):
    """Base class: every error the store raises on purpose."""


class InvalidArgument(StoreError):
    """The request is malformed: wrong dimension, NaN in a vector, k out of range, bad filter."""


class NotFound(StoreError):
    """An id or collection that does not exist."""


class AlreadyExists(StoreError):
    """Creating something that exists with different settings."""


class IncompatibleSpace(StoreError):
    """The collection holds vectors of another embedding space (another model) than the caller's."""


class StorageFailure(StoreError):
    """The disk refused a write (full, read-only, I/O error); nothing acknowledged was lost."""


class NotSupported(StoreError):
    """An operation this kind of collection does not offer (e.g. whole-collection jobs on a sharded one)."""

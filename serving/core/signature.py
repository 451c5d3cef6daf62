"""What the server keeps in an item's opaque index signature, and how it reads it back.

The index stores a short byte string beside each vector and knows nothing of its content
(``index.metadata.NewItem.signature``). The server's layout:

    thumbnail (tie_break.SIGNATURE_BYTES) | facts block (optional) | local features (optional)

* the thumbnail orders near ties (``tie_break.py``);
* the facts (:class:`PhotoFacts`: the file's pixel size, byte count, and whether it carries EXIF)
  choose which copy of a duplicate group to keep (``dedup.py``) without the file at hand;
* the local features verify copies (``local_features.py``).

Signatures written before the facts existed (thumbnail, then features) still read: the facts block
starts with a tag byte that no local-feature blob starts with.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from simclr_search.serving.core import local_features
from simclr_search.serving.core.tie_break import SIGNATURE_BYTES

_FACTS = struct.Struct("<cIIIB")
_TAG = b"F"
_EXIF = 1


@dataclass(frozen=True)
class PhotoFacts:
    """An image file's facts: pixel size as stored (before any EXIF rotation), encoded bytes, EXIF."""

    width: int
    height: int
    bytes: int
    exif: bool

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def pack(self) -> bytes:
        clamp = 0xFFFFFFFF
        return _FACTS.pack(
            _TAG,
            min(self.width, clamp),
            min(self.height, clamp),
            min(self.bytes, clamp),
            _EXIF if self.exif else 0,
        )


@dataclass(frozen=True)
class StoredSignature:
    thumbnail: bytes
    facts: PhotoFacts | None
    features: tuple[np.ndarray, np.ndarray] | None


def compose(thumbnail: bytes, facts: PhotoFacts | None = None, features: bytes = b"") -> bytes:
    """The signature to store: the thumbnail, then the facts and the packed local features."""
    return thumbnail + (facts.pack() if facts is not None else b"") + features


def parse(signature: bytes) -> StoredSignature:
    """Any stored signature (empty, thumbnail only, with or without facts and features)."""
    thumbnail, rest = signature[:SIGNATURE_BYTES], signature[SIGNATURE_BYTES:]
    facts = None
    if len(rest) >= _FACTS.size and rest[:1] == _TAG:
        _, width, height, size, flags = _FACTS.unpack_from(rest)
        facts = PhotoFacts(width, height, size, bool(flags & _EXIF))
        rest = rest[_FACTS.size :]
    return StoredSignature(thumbnail, facts, local_features.unpack(rest) if rest else None)


def vote_codes(signature: bytes) -> bytes:
    """The index's vote codes for a stored signature: its :data:`local_features.VOTE_CODES`
    strongest descriptors, concatenated (empty without local features)."""
    features = features_of(signature)
    if features is None:
        return b""
    return np.ascontiguousarray(features[1][: local_features.VOTE_CODES]).tobytes()


def features_of(signature: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """The local features inside a stored signature (None: stored without, e.g. by vector)."""
    return parse(signature).features

"""Errors raised by latentsearch.

Every error a user can cause is a :class:`LatentSearchError` whose message is one line saying what
was wrong, where, and what to do. The CLI prints that line; anything else reaching the user is a bug.
"""

from __future__ import annotations


class LatentSearchError(Exception):
    """Base class of every expected latentsearch error."""

    def __str__(self) -> str:  # KeyError subclasses would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidInputError(LatentSearchError, ValueError):
    """Input that cannot be used: wrong dimension, NaN, empty text, bad file, bad option."""


class FilterError(InvalidInputError):
    """A metadata filter that cannot be parsed or compiled."""


class NotFoundError(LatentSearchError, KeyError):
    """A collection or item that does not exist."""


class CollectionNotFoundError(NotFoundError):
    """The named collection does not exist in the data directory."""


class ItemNotFoundError(NotFoundError):
    """An item id that is not in the collection."""


class ConflictError(LatentSearchError):
    """A write that clashes with what is stored: existing collection, duplicate id."""


class EncoderMismatchError(LatentSearchError):
    """The collection was built with another encoder, dimension or metric."""


class CorruptCollectionError(LatentSearchError):
    """A collection file is damaged beyond what latentsearch can rebuild by itself."""


class LockTimeoutError(LatentSearchError):
    """Another process held the collection's write lock for too long."""


class ClusterUnavailableError(LatentSearchError):
    """The Ray cluster a sharded collection needs cannot be reached."""


class DiskFullError(LatentSearchError, OSError):
    """A write failed for want of space: nothing acknowledged is lost, the write did not happen."""


class ReadOnlyError(LatentSearchError, PermissionError):
    """A write to a collection whose files may be read but not written (a read-only mount or folder)."""

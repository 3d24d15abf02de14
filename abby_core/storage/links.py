"""A stored image with a fresh link: the one place a :class:`StoredImage` is built from storage.

The gallery (:mod:`abby_core.storage.protocol`) and a restore (:mod:`abby_core.storage.restore`)
hand back images this way; an archived image's link is made by :func:`link` too.
"""

from __future__ import annotations

from datetime import datetime

from abby_core.errors import StorageError
from abby_core.storage import keys
from abby_core.storage.backend import StorageBackend
from abby_core.storage.models import StoredImage

__all__ = ["link", "stored_image"]


def link(backend: StorageBackend, key: str, *, ttl: int, may_fail: bool = False) -> tuple[str | None, str | None]:
    """``(url, path)`` of ``key`` for ``ttl`` seconds (its content type from its name).

    When storage refuses to make a link, :class:`StorageError` is raised, or with ``may_fail``
    ``(None, None)`` is returned: the image is there, and a later listing links it.
    """
    try:
        return backend.link(key, content_type=keys.content_type_of(key), ttl=ttl)
    except StorageError:
        if not may_fail:
            raise
        return None, None


def stored_image(
    backend: StorageBackend,
    key: str,
    *,
    owner: str,
    size: int,
    created: datetime,
    ttl: int,
    may_fail: bool = False,
) -> StoredImage:
    """The record of ``owner``'s stored image ``key`` with a fresh link (see :func:`link` for ``may_fail``)."""
    url, path = link(backend, key, ttl=ttl, may_fail=may_fail)
    return StoredImage(key, owner, size, created, keys.content_type_of(key), url, path)

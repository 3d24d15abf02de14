"""The one place the dashboard words a core error for an admin: a status and a sentence.

Core errors carry data (``InvalidInput.value``, ``ImageNotFound.key``, ...) and neutral
sentences written for logs; the dashboard shows neither those sentences, nor codes, nor
field names. A page says what happened and what the admin can do, naming what they typed
(``typed``) when their input was refused; the core's own sentence goes to the log::

    try:
        await dash.storage.grant(uid, count)
    except AbbyError as exc:
        raise refusal(exc, changing=True, field="count", typed=form_text) from exc
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException

from abby_core.errors import (
    AbbyError,
    ImageNotFound,
    InvalidInput,
    InvalidKey,
    InvalidUser,
    LedgerCorrupt,
    StorageError,
    StorageUnavailable,
)
from abby_core.storage import rules

__all__ = ["FIELDS", "admin_message", "refusal"]

log = logging.getLogger("abby.dashboard")

_NOTHING_CHANGED = "Nothing was changed"
#: What each form field the core checks must be, for the admin (``field`` below); the
#: bounds are the core's, read when the sentence is written.
FIELDS = {"count": "The number of extra generations must be a whole number from 1 to {rules.MAX_GRANT}"}
_CHECK_STORAGE = "Check that the storage folder or S3 server can be reached ('abby doctor' checks it), then reload"


def _shown(typed: str | None) -> str:
    """What the admin typed, quoted and cut short, or ``"That"`` when nothing is known."""
    return repr(typed[:40]) if typed is not None else "That"


def admin_message(
    exc: AbbyError, *, changing: bool = False, field: str | None = None, typed: str | None = None
) -> tuple[int, str]:
    """The HTTP status and the admin's sentence for ``exc``.

    ``changing``: the error came while changing something (an action), so the sentence says
    nothing was changed; else while reading a page. ``field``: the form field (a key of
    :data:`FIELDS`) and ``typed`` what the admin typed there (or in the address), named in
    the sentence when the core refused it.
    """
    done = f"{_NOTHING_CHANGED}: storage" if changing else "Storage"
    match exc:
        case InvalidUser():
            return 400, f"{_shown(typed)} is not a Discord user id: it must be digits only."
        case InvalidKey():
            return 403, "That image does not belong to this member."
        case ImageNotFound():
            return 404, "That image is gone (deleted or cleaned up)."
        case InvalidInput() if field in FIELDS:
            return 400, f"{FIELDS[field].format(rules=rules)}, not {_shown(typed)}. {_NOTHING_CHANGED}."
        case InvalidInput():
            return 400, f"{_shown(typed)} was not accepted. {_NOTHING_CHANGED}."
        case LedgerCorrupt():
            log.warning("A quota record could not be read: %s", exc.message)
            what = "could not be updated" if changing else "could not be read"
            return 503, (
                f"{done} {what}: a member's quota record is damaged. It is rebuilt on its next use; "
                "reload the page ('abby storage reconcile' checks every record)."
            )
        case StorageUnavailable():
            log.warning("Storage did not answer: %s", exc.message)
            what = "could not be updated" if changing else "could not be read"
            return 503, f"{done} {what}: it did not answer. {_CHECK_STORAGE}."
        case StorageError():
            log.warning("Storage failed: %s", exc.message)
            what = "could not be updated" if changing else "could not be read"
            return 503, f"{done} {what}. {_CHECK_STORAGE}; the details are in the dashboard's log."
    log.warning("Unworded core error (%s): %s", exc.code, exc.message)
    ending = f"{_NOTHING_CHANGED}; the" if changing else "The"
    return 500, f"That could not be done. {ending} details are in the dashboard's log."


def refusal(
    exc: AbbyError, *, changing: bool = False, field: str | None = None, typed: str | None = None
) -> HTTPException:
    """:func:`admin_message` as the error page to raise."""
    status, message = admin_message(exc, changing=changing, field=field, typed=typed)
    return HTTPException(status, message)

"""Images in an S3-compatible bucket (MinIO, AWS S3, SeaweedFS) through boto3.

The clients are built lazily, once, by :mod:`abby_core.storage.s3_client`, which also
translates every botocore error (:meth:`S3Backend._translate`); none leaves this module.
Presigned links are signed by a second client configured for ``S3_PUBLIC_ENDPOINT_URL``:
SigV4 signs the host, so the host of a signed URL must never be rewritten afterwards.
Credentials written into an endpoint (``http://user:pw@host:8333``) never leave the backend
either: messages and ``location`` show the endpoint redacted, and links are signed for the
endpoint without its userinfo.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from abby_core.config import S3Settings
from abby_core.errors import ImageNotFound, StorageError, StorageUnavailable
from abby_core.storage.backend import ConditionFailed, StorageBackend
from abby_core.storage.keys import IMAGES_PREFIX
from abby_core.storage.models import ObjectInfo, ReadyReport
from abby_core.storage.s3_client import (
    anonymous_client,
    error_code,
    error_status,
    make_client,
    redact,
    translate,
    without_userinfo,
)

__all__ = ["ARCHIVE_LIFECYCLE_RULE_ID", "EVENTS_LIFECYCLE_RULE_ID", "LIFECYCLE_RULE_ID", "S3Backend"]

log = logging.getLogger("abby.storage")

LIFECYCLE_RULE_ID = "abby-images-expiry"  # the same id minio/init.sh uses
EVENTS_LIFECYCLE_RULE_ID = "abby-events-expiry"  # ditto; a backstop for the daily prune of usage events
ARCHIVE_LIFECYCLE_RULE_ID = "abby-archive-expiry"  # ditto; a backstop for the daily prune of archived images
_ARCHIVE_PREFIX = "archive/"  # abby_core.storage.keys.ARCHIVE_PREFIX
_EVENTS_PREFIX = "events/"  # abby_core.analytics.log.EVENTS_PREFIX (not imported: analytics imports storage)
_DELETE_BATCH = 1000  # the DeleteObjects maximum
_NOT_SUPPORTED = ("NotImplemented", "MethodNotAllowed", "XNotImplemented", "UnsupportedOperation")
# What an anonymous GET of a private object answers; anything else proves nothing.
_REFUSED_STATUSES = (401, 403)
_REFUSED_CODES = ("AccessDenied", "AllAccessDisabled", "Forbidden", "Unauthorized")
_T = TypeVar("_T")


def _expiry_rule(rule_id: str, prefix: str, days: int) -> dict[str, Any]:
    return {"ID": rule_id, "Status": "Enabled", "Filter": {"Prefix": prefix}, "Expiration": {"Days": days}}


class S3Backend(StorageBackend):
    """A bucket; keys are object keys."""

    name = "s3"

    def __init__(self, settings: S3Settings, *, client: Any = None, presign_client: Any = None) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._client = client
        self._presign_client = presign_client
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return f"s3://{self.bucket} at {redact(self.settings.endpoint_url)}"

    # -- clients, built once on first use ------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = make_client(self.settings, self.settings.endpoint_url)
        return self._client

    @property
    def presign_client(self) -> Any:
        """The client that signs links, for the public endpoint (else the endpoint).

        Its endpoint has no userinfo: a link is handed to Discord members and must not
        carry ``user:password@``. The host is unchanged, so the signature still holds.
        """
        if self._presign_client is None:
            target = self.settings.public_endpoint_url or self.settings.endpoint_url
            signing = without_userinfo(target) if target else None
            if signing == self.settings.endpoint_url:
                self._presign_client = self.client
            else:
                with self._lock:
                    if self._presign_client is None:
                        self._presign_client = make_client(self.settings, signing)
        return self._presign_client

    # -- the one translation boundary ----------------------------------------------------
    def _translate(self, exc: Exception, what: str) -> StorageError:
        return translate(exc, what, bucket=self.bucket, endpoint=self.settings.endpoint_url)

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, what) from exc

    # -- objects -------------------------------------------------------------------------
    def put_object(self, key: str, data: bytes, content_type: str) -> None:
        self._call(
            "save the image",
            lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type),
        )

    def get_object(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return bytes(response["Body"].read())
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404") or error_status(exc) == 404:
                raise ImageNotFound(key) from None
            raise self._translate(exc, "read the image") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "read the image") from exc

    def head_object(self, key: str) -> ObjectInfo | None:
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_status(exc) == 404 or error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._translate(exc, "read the image") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "read the image") from exc
        return ObjectInfo(key, int(r["ContentLength"]), r["LastModified"])

    def delete_objects(self, keys: Sequence[str]) -> None:
        keys = list(keys)
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": k} for k in keys[start : start + _DELETE_BATCH]]
            response = self._call(
                "delete images",
                lambda batch=batch: self.client.delete_objects(  # type: ignore[misc]
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                ),
            )
            errors = [e for e in response.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise StorageUnavailable(
                    f"Could not delete {len(errors)} image(s): the storage server answered {errors[0].get('Code')}."
                )

    def copy_object(self, source: str, target: str, *, storage_class: str) -> None:
        """Copy ``source`` to ``target`` on the server, stored in ``storage_class`` (the archive).

        A server that does not offer the class (MinIO without tiering offers only STANDARD
        and REDUCED_REDUNDANCY) refuses with ``InvalidStorageClass``: a clear
        :class:`StorageUnavailable`, and the image stays where it is.
        """
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=target,
                CopySource={"Bucket": self.bucket, "Key": source},
                StorageClass=storage_class,
                MetadataDirective="COPY",
            )
        except ClientError as exc:
            if error_code(exc) == "InvalidStorageClass":
                raise StorageUnavailable(
                    f"Could not archive the image: the storage server does not offer the storage class "
                    f"{storage_class!r}. Set S3_ARCHIVE_STORAGE_CLASS to one it offers, or leave it empty."
                ) from exc
            if error_code(exc) in ("NoSuchKey", "404") or error_status(exc) == 404:
                raise ImageNotFound(source) from None
            raise self._translate(exc, "archive the image") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "archive the image") from exc

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"], int(item["Size"]), item["LastModified"], str(item.get("ETag", "")))
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "list the stored images") from exc

    # -- documents -----------------------------------------------------------------------
    def read_doc(self, key: str) -> tuple[bytes, str] | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return bytes(response["Body"].read()), str(response["ETag"])
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404") or error_status(exc) == 404:
                return None
            raise self._translate(exc, "read the quota ledger") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "read the quota ledger") from exc

    def write_doc(self, key: str, body: bytes, *, etag: str | None) -> str:
        if etag is not None and not etag.strip(' "'):
            # An empty If-Match header is dropped or ignored by servers, which would make
            # this an unconditional overwrite; no stored document has an empty tag.
            raise ConditionFailed(key)
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            response = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **condition
            )
        except ClientError as exc:
            # 412: the document changed (or exists); 409: a concurrent conditional write.
            code, status = error_code(exc), error_status(exc)
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise ConditionFailed(key) from None
            if etag is not None and (status == 404 or code == "NoSuchKey"):
                raise ConditionFailed(key) from None
            raise self._translate(exc, "update the quota ledger") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "update the quota ledger") from exc
        return str(response["ETag"])

    def delete_doc(self, key: str) -> None:
        self._call("delete a ledger document", lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def sweep_partial_writes(self, older_than: datetime) -> int:
        """Abort the bucket's incomplete multipart uploads started before ``older_than``.

        Abby's own writes are single PUTs, which never leave a partial object, but an
        upload by another tool (or a future multipart write) that died keeps its parts,
        invisible to listings yet stored, until aborted. Returns how many uploads were
        aborted. Objects are never touched. ``older_than`` must be timezone-aware.

        Not errors, logged and counted as 0: a server without ``ListMultipartUploads``,
        and credentials that may not list or abort uploads (the least-privilege policy
        of ``minio/abby-policy.json`` grants neither). An upload completed or aborted by
        someone else meanwhile is not counted; one without a start time is left alone.
        """
        if older_than.tzinfo is None:
            raise ValueError("older_than must be timezone-aware")
        stale: list[tuple[str, str]] = []
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket):
                for upload in page.get("Uploads", []):
                    started = upload.get("Initiated")
                    if started is not None and started < older_than:
                        stale.append((upload["Key"], upload["UploadId"]))
        except ClientError as exc:
            if self._sweep_not_allowed(exc, "list"):
                return 0
            raise self._translate(exc, "list unfinished uploads") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "list unfinished uploads") from exc
        aborted = 0
        for key, upload_id in stale:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                if error_code(exc) == "NoSuchUpload" or error_status(exc) == 404:
                    continue
                if self._sweep_not_allowed(exc, "abort"):
                    break
                raise self._translate(exc, "abort an unfinished upload") from exc
            except BotoCoreError as exc:
                raise self._translate(exc, "abort an unfinished upload") from exc
            aborted += 1
        return aborted

    @staticmethod
    def _sweep_not_allowed(exc: ClientError, verb: str) -> bool:
        code, status = error_code(exc), error_status(exc)
        if code in _NOT_SUPPORTED or status in (405, 501):
            log.info("The storage server cannot %s unfinished multipart uploads (%s); sweep skipped.", verb, code)
            return True
        if code == "AccessDenied" or status == 403:
            log.info("These S3 credentials may not %s unfinished multipart uploads; sweep skipped.", verb)
            return True
        return False

    # -- links and set-up ----------------------------------------------------------------
    def link(self, key: str, *, content_type: str, ttl: int) -> tuple[str | None, str | None]:
        url = self._call(
            "sign a link",
            lambda: self.presign_client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key, "ResponseContentType": content_type},
                ExpiresIn=ttl,
            ),
        )
        return str(url), None

    def _bucket_exists(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except ClientError as exc:
            if error_status(exc) == 404 or error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise self._translate(exc, f"open the bucket {self.bucket!r}") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, f"open the bucket {self.bucket!r}") from exc

    def ensure_ready(
        self,
        *,
        cleanup_days: int,
        create: bool = True,
        events_days: int | None = None,
        archive_days: int | None = None,
    ) -> ReadyReport:
        """Create the bucket if missing (when allowed), keep it private, install the lifecycle rules.

        Always the ``images/`` rule (``cleanup_days``); with ``events_days``, also the
        ``events/`` backstop; with ``archive_days``, the ``archive/`` backstop. Other rules
        of the bucket are kept.
        """
        if events_days is not None and events_days < 1:
            raise ValueError("events_days must be at least 1")
        notes: list[str] = []
        created = False
        if not self._bucket_exists():
            if not create:
                raise StorageUnavailable(f"The bucket {self.bucket!r} does not exist. Run 'abby storage init'.")
            params: dict[str, Any] = {"Bucket": self.bucket}
            if self.settings.region != "us-east-1":
                params["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.region}
            self._call(f"create the bucket {self.bucket!r}", lambda: self.client.create_bucket(**params))
            created = True
        private = self._make_private(notes)
        self._install_lifecycle(cleanup_days, notes, events_days=events_days, archive_days=archive_days)
        return ReadyReport(
            backend=self.name,
            location=self.location,
            created=created,
            private=private,
            lifecycle_days=cleanup_days,
            conditional_writes=self.check_conditional_writes(),
            notes=notes,
        )

    def _make_private(self, notes: list[str]) -> bool:
        """Block public access where the server and our credentials allow, then verify it.

        The application user of the compose set-up may not change bucket policy or ACLs
        (least privilege), so refusals here are notes, not errors; what counts is the
        check at the end: an anonymous GET of a probe object must be refused.
        """
        blocked = {
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        }
        attempts: list[tuple[str, Callable[[], Any]]] = [
            (
                "public-access block",
                lambda: self.client.put_public_access_block(Bucket=self.bucket, PublicAccessBlockConfiguration=blocked),
            ),
            ("private ACL", lambda: self.client.put_bucket_acl(Bucket=self.bucket, ACL="private")),
        ]
        for label, attempt in attempts:
            try:
                attempt()
            except ClientError as exc:
                code = error_code(exc)
                if code in _NOT_SUPPORTED or error_status(exc) == 501:
                    notes.append(f"The server does not support a bucket {label}.")
                elif code in ("AccessDenied", "AccessControlListNotSupported") or error_status(exc) == 403:
                    notes.append(f"These credentials may not set a bucket {label} (fine for a least-privilege user).")
                else:
                    raise self._translate(exc, f"set the bucket {label}") from exc
            except BotoCoreError as exc:
                raise self._translate(exc, f"set the bucket {label}") from exc
        private = self.anonymous_read_refused()
        if not private:
            notes.append("WARNING: anonymous users can read objects in this bucket. Remove any public policy.")
        return private

    def _anonymous_client(self) -> Any:
        """A client that signs nothing (:func:`~abby_core.storage.s3_client.anonymous_client`)."""
        return anonymous_client(self.settings)

    def anonymous_read_refused(self) -> bool:
        """Write a probe object and check that an unsigned GET of it is refused.

        ``True`` only when the server refuses with 401/403 (``AccessDenied`` and kin);
        ``False`` when the GET succeeds. Any other answer (a 5xx, a 404 for the object
        just written, a redirect) proves nothing either way and raises
        :class:`StorageUnavailable` rather than calling the bucket private.
        """
        what = "check that the bucket is private"
        key = f"temp/privacy-probe-{uuid.uuid4().hex}"
        self.put_object(key, b"probe", "text/plain")
        try:
            anonymous = self._anonymous_client()
            try:
                anonymous.get_object(Bucket=self.bucket, Key=key)
                return False
            except ClientError as exc:
                if error_status(exc) in _REFUSED_STATUSES or error_code(exc) in _REFUSED_CODES:
                    return True
                raise self._translate(exc, what) from exc
            except BotoCoreError as exc:
                raise self._translate(exc, what) from exc
            finally:
                close = getattr(anonymous, "close", None)
                if close is not None:
                    close()
        finally:
            self.delete_objects([key])

    def _install_lifecycle(
        self, days: int, notes: list[str], *, events_days: int | None = None, archive_days: int | None = None
    ) -> None:
        """Put our rules in the bucket's lifecycle configuration, keeping every other rule.

        ``events_days`` ``None`` leaves an existing events rule exactly as it is.
        """
        rules: list[dict[str, Any]] = []
        try:
            rules = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
        except ClientError as exc:
            if error_code(exc) not in ("NoSuchLifecycleConfiguration",) and error_status(exc) != 404:
                raise self._translate(exc, "read the bucket's lifecycle rules") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "read the bucket's lifecycle rules") from exc
        ours: list[dict[str, Any]] = [_expiry_rule(LIFECYCLE_RULE_ID, IMAGES_PREFIX, days)]
        if events_days is not None:
            ours.append(_expiry_rule(EVENTS_LIFECYCLE_RULE_ID, _EVENTS_PREFIX, events_days))
        if archive_days is not None:
            ours.append(_expiry_rule(ARCHIVE_LIFECYCLE_RULE_ID, _ARCHIVE_PREFIX, archive_days))
        replaced = {rule["ID"] for rule in ours}
        kept = [r for r in rules if r.get("ID") not in replaced]
        self._call(
            "install the lifecycle rules",
            lambda: self.client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket, LifecycleConfiguration={"Rules": [*kept, *ours]}
            ),
        )
        notes.append(f"Lifecycle rule {LIFECYCLE_RULE_ID!r}: images expire after {days} days.")
        if events_days is not None:
            notes.append(
                f"Lifecycle rule {EVENTS_LIFECYCLE_RULE_ID!r}: usage events expire after {events_days} days "
                "(a backstop; the bot's daily maintenance prunes them sooner)."
            )
        if archive_days is not None:
            notes.append(
                f"Lifecycle rule {ARCHIVE_LIFECYCLE_RULE_ID!r}: archived images expire after {archive_days} days "
                "(a backstop; the bot's daily maintenance prunes them sooner)."
            )

    def lifecycle_days(self) -> int | None:
        """The expiry days of our lifecycle rule, or ``None`` when it is not installed."""
        try:
            rules = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
        except ClientError as exc:
            if error_code(exc) == "NoSuchLifecycleConfiguration" or error_status(exc) == 404:
                return None
            raise self._translate(exc, "read the bucket's lifecycle rules") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "read the bucket's lifecycle rules") from exc
        for rule in rules:
            if rule.get("ID") == LIFECYCLE_RULE_ID and rule.get("Status") == "Enabled":
                days = rule.get("Expiration", {}).get("Days")
                return int(days) if days is not None else None
        return None

    def close(self) -> None:
        for client in {id(c): c for c in (self._client, self._presign_client) if c is not None}.values():
            close = getattr(client, "close", None)
            if close is not None:
                close()
        self._client = self._presign_client = None

"""The boto3 clients of the S3 backend, and the one place botocore errors become core errors.

A client is built with what S3-compatible servers need: path-style addressing, an explicit
region, SigV4 (SigV2 presigned links break as soon as they carry ``response-content-type``),
and checksums only ``when_required`` (boto3 1.36+ otherwise sends CRC headers that several
servers reject).

Every botocore error is translated by :func:`translate`; none leaves the backend.
Credentials written into an endpoint (``http://user:pw@host:8333``) never leave it either:
messages show the endpoint through :func:`redact`, and links are signed for the endpoint
without its userinfo (:func:`without_userinfo`).
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError, NoCredentialsError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from abby_core.config import S3Settings
from abby_core.errors import StorageError, StorageUnavailable

__all__ = ["anonymous_client", "error_code", "error_status", "make_client", "redact", "translate", "without_userinfo"]


def without_userinfo(url: str, mask: str = "") -> str:
    """``url`` with any ``user:password@`` replaced by ``mask``.

    Everything after ``scheme://`` up to the LAST ``@`` is userinfo, so a password with a
    raw ``@``, ``/`` or ``#`` goes too (an ``@`` in a path would take more than needed,
    never less; endpoints have no such paths).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" not in rest:
        return url
    return f"{scheme}{sep}{mask}{rest.rpartition('@')[2]}"


def redact(url: str | None) -> str:
    """An endpoint fit to print: userinfo becomes ``***@``; ``None`` is AWS itself."""
    return without_userinfo(url, "***@") if url else "AWS S3"


def error_code(exc: ClientError) -> str:
    """The S3 error code of ``exc`` (``NoSuchKey``, ``AccessDenied``, ...), or ``""``."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_status(exc: ClientError) -> int:
    """The HTTP status of ``exc``, or 0 when the answer had none."""
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def make_client(settings: S3Settings, endpoint: str | None) -> Any:
    """A signing client for ``endpoint`` (``None``: AWS), or :class:`StorageUnavailable` for a bad URL."""
    s = settings
    config = Config(
        signature_version="s3v4",
        region_name=s.region,
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=s.timeout_seconds,
        read_timeout=s.timeout_seconds,
        retries={"max_attempts": s.max_attempts, "mode": "standard"},
        max_pool_connections=32,
    )
    secret = s.secret_access_key.get_secret_value() if s.secret_access_key else None
    try:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=s.access_key_id,
            aws_secret_access_key=secret,
            region_name=s.region,
            config=config,
        )
    except ValueError:
        # botocore's message quotes the whole URL, credentials included: not chained.
        raise StorageUnavailable(
            f"Could not open the storage: {redact(endpoint)} is not a valid endpoint URL. "
            "Check S3_ENDPOINT_URL and S3_PUBLIC_ENDPOINT_URL."
        ) from None


def anonymous_client(settings: S3Settings) -> Any:
    """A client that signs nothing: what anyone on the network could do.

    Its endpoint has no userinfo either: a stranger does not know those credentials.
    """
    endpoint = settings.endpoint_url
    return boto3.session.Session().client(
        "s3",
        endpoint_url=without_userinfo(endpoint) if endpoint else None,
        region_name=settings.region,
        config=Config(
            signature_version=UNSIGNED,
            s3={"addressing_style": "path"},
            connect_timeout=settings.timeout_seconds,
            read_timeout=settings.timeout_seconds,
            retries={"max_attempts": 1},
        ),
    )


def translate(exc: Exception, what: str, *, bucket: str, endpoint: str | None) -> StorageError:
    """The core error for a botocore error raised while trying to ``what`` in ``bucket``.

    Every message names the endpoint through :func:`redact` and says what to check.
    """
    where = redact(endpoint)
    if isinstance(exc, ClientError):
        code, status = error_code(exc), error_status(exc)
        if code in ("NoSuchBucket",):
            return StorageUnavailable(
                f"Could not {what}: the bucket {bucket!r} does not exist. Run 'abby storage init'."
            )
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden") or status == 403:
            return StorageUnavailable(
                f"Could not {what}: the storage server refused access. "
                "Check S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY and the bucket policy."
            )
        if status in (500, 502, 503, 504) or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            return StorageUnavailable(f"Could not {what}: the storage server at {where} is having trouble.")
        return StorageUnavailable(f"Could not {what}: the storage server answered {code or status}.")
    if isinstance(exc, NoCredentialsError):
        return StorageUnavailable(
            f"Could not {what}: no S3 credentials. Set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY."
        )
    if isinstance(exc, ReadTimeoutError):
        return StorageUnavailable(f"Could not {what}: the storage server at {where} did not answer in time.")
    if isinstance(exc, BotoConnectionError):
        return StorageUnavailable(f"Could not {what}: the storage server at {where} could not be reached.")
    return StorageUnavailable(f"Could not {what}: storage error ({type(exc).__name__}).")

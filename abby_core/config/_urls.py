"""The checks behind URL and host variables, and :func:`redact_url` for showing a URL safely.

A URL variable is declared as :data:`Url` or :data:`OptionalUrl`; its :data:`URL` validator is
also the mark by which errors and ``abby doctor`` know to hide credentials in the value.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

__all__ = ["URL", "ListenHost", "OptionalUrl", "Url", "check_host", "check_http_url", "redact_url"]

# A DNS name: labels of letters, digits and hyphens (botocore refuses anything else).
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def redact_url(url: str | None) -> str:
    """``url`` with any credentials in it replaced: ``http://user:pw@host`` -> ``http://***@host``.

    Safe for any text, valid URL or not (it is used in error messages about bad URLs);
    ``None`` gives ``""``. Only the part before the first ``/``, ``?`` or ``#`` after the
    scheme is looked at, and everything up to its last ``@`` is hidden.
    """
    if not url:
        return ""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority = rest[:end]
    if "@" in authority:
        rest = "***@" + authority.rpartition("@")[2] + rest[end:]
    return f"{scheme}{sep}{rest}"


def check_host(host: str) -> None:
    if host.startswith("["):
        address = host[1:-1] if host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(address.replace("%25", "%"))
        except ValueError:
            raise ValueError(f"{host[:45]!r} is not a valid IPv6 address") from None
        return
    if not host.isascii():
        try:
            hint = f": write it as {host.encode('idna').decode('ascii')[:60]!r}"
        except UnicodeError:
            hint = ""
        raise ValueError(f"its host name has letters outside ASCII{hint}")
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"its host {host[:45]!r} is not a valid host name (letters, digits, hyphens and dots) "
            "or IP address"
        )


def check_http_url(value: str) -> str:
    """``value`` stripped of spaces around it and of a trailing ``/``, or ``ValueError`` saying why not.

    An http(s) URL with a host: a DNS name, an IPv4 address or a bracketed IPv6
    address, an optional port from 1 to 65535, no spaces or control characters
    and only valid ``%XX`` escapes. Credentials (``user:pw@``) are allowed but never
    repeated in the message.
    """
    value = value.strip().rstrip("/")
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
        raise ValueError("it contains a space or a control character")
    if not value.lower().startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    if _BAD_ESCAPE.search(value):
        raise ValueError("it has a % that is not followed by two hexadecimal digits")
    authority = re.split(r"[/?#]", value.split("://", 1)[1], maxsplit=1)[0]
    hostport = authority.rpartition("@")[2]
    if hostport.count("[") != hostport.count("]") or hostport.count("[") > 1:
        raise ValueError("its IPv6 address brackets [ ] do not match")
    if hostport.startswith("["):
        host, rest = hostport[: hostport.index("]") + 1], hostport[hostport.index("]") + 1 :]
    elif hostport.count(":") > 1:
        raise ValueError("an IPv6 address must be in brackets, as in http://[::1]:9000")
    else:
        host, colon, port = hostport.partition(":")
        rest = colon + port
    if not host:
        raise ValueError("it has no host name (as in http://minio:9000)")
    if rest and not rest.startswith(":"):
        raise ValueError("it has text after the IPv6 address's closing bracket")
    check_host(host)
    port_text = rest[1:]
    if rest == ":":
        raise ValueError("it has a ':' after the host but no port number")
    if rest and not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise ValueError(f"its port {port_text[:10]!r} is not a number from 1 to 65535")
    try:  # the parser the HTTP clients use must agree
        parts = urlsplit(value)
        understood = parts.hostname is not None and (parts.port is not None) == bool(rest)
    except ValueError:
        understood = False
    if not understood:
        raise ValueError("it is not a valid URL")
    return value



def _http_url(value: str | None) -> str | None:
    return None if value is None else check_http_url(value)


def _listen_host(value: str) -> str:
    value = value.strip().removeprefix("[").removesuffix("]")
    if not value:
        raise ValueError("it is empty (127.0.0.1 listens on this machine only, 0.0.0.0 on every interface)")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        check_host(value)
    return value


URL = AfterValidator(_http_url)
#: An http(s) URL variable (checked, and shown without credentials in errors and ``abby doctor``).
Url = Annotated[str, URL]
OptionalUrl = Annotated[str | None, URL]
ListenHost = Annotated[str, AfterValidator(_listen_host)]

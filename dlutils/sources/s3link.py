"""S3 objects over an http transport: links signed locally by botocore, fetched by libcurl.

:class:`S3LinkRemote` opens an object through a presigned ``GET`` link (or, for
anonymous access, the plain link), made by botocore without a network call, and
fetched by the transport :func:`dlutils.sources.http.open_remote` chooses. It keeps
every rule of :class:`~dlutils.sources.aws.S3Remote`: anonymous first, then the
credentials on 401/403 (the bucket remembered as private); a range pinned to its ETag
by ``If-Match`` (a changed object answers 412: a resume restarts whole, a segment
raises :class:`~dlutils.RemoteChangedError`); ``VersionId`` when the version is known.
An error status is raised as botocore's ``ClientError``, with S3's code and message,
so that messages and retries read the same on both paths. A presigned link is a
credential: it appears in no message (they name ``s3://bucket/key``).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from typing import Any

import requests

from ..errors import RemoteChangedError
from ..transfer import Body
from ..transports import choose
from .aws import S3Remote, _boto, _classify, _named
from .http import HttpRemote, open_remote

__all__ = ["S3LinkRemote", "LINK_EXPIRES"]

log = logging.getLogger("dlutils")

#: Seconds a presigned link stays valid; a link is made for each request.
LINK_EXPIRES = 3600


class S3LinkRemote:
    """Opens one S3 object through a signed link (see :class:`dlutils.transfer.Remote`).

    Parameters
    ----------
    s3 : S3Remote
        The object (bucket, key, version, how it is reached); its ``version`` may be
        set later, before the first ``open``.
    transport : {"auto", "curl", "requests"}
        What fetches the link (see :func:`dlutils.transports.choose`).

    The timeouts are the ``S3Remote``'s, as :func:`~dlutils.sources.aws.aws_download`
    checked them.
    """

    def __init__(self, s3: S3Remote, transport: str):
        self.s3 = s3
        self.display = s3.display
        self.transport = transport
        self.timeout = s3.access.options[-1]  # (connect, read), checked
        choose(transport)  # a bad value fails before any request

    def open(self, start: int = 0, end: int | None = None, *, if_range: str | None = None) -> Body:
        _, botocore = _boto()
        access = self.s3.access
        ranged = bool(start) or end is not None
        headers = {"If-Match": if_range} if ranged and if_range else {}
        signed = access.signed or access._private_key() in _private()
        try:
            return self._get(signed, start, end, headers)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if signed or status not in (401, 403):
                return self._answer(exc, start, end, if_range)
            refused = exc
        access.attempts.append((access._how(False), False, _error(refused).args[0]))
        log.debug("anonymous access to s3://%s was refused; using AWS credentials", access.bucket)
        try:
            body = self._get(True, start, end, headers)
        except botocore.exceptions.NoCredentialsError as exc:
            access.attempts.append((access._how(True), False, str(exc)))
            error = _error(refused)
            if hasattr(error, "add_note"):
                error.add_note("No AWS credentials were found to retry it with.")
            raise _named(error, self.display) from None
        except requests.HTTPError as exc:
            access.attempts.append((access._how(True), False, _error(exc).args[0]))
            _private().add(access._private_key())
            return self._answer(exc, start, end, if_range)
        access.attempts.append((access._how(True), True, None))
        _private().add(access._private_key())
        return body

    def classify(self, exc: BaseException) -> tuple[bool, float | None]:
        _, botocore = _boto()
        if isinstance(exc, botocore.exceptions.ClientError):
            return _classify(exc)
        return HttpRemote.classify(self, exc)  # type: ignore[arg-type] # the transports' rule

    def client(self, signed: bool) -> Any:
        """The boto3 client that signs (or, anonymous, only builds) the object's links."""
        from .aws import _CLIENTS

        access = self.s3.access
        if signed and not access.signed:  # the fallback of anonymous access: default chain
            return _CLIENTS.get(None, None, access.options, True)
        return _CLIENTS.get(access.session, access.profile, access.options, signed)

    def link(self, signed: bool) -> str:
        """The object's GET link: presigned with the credentials, or plain (anonymous)."""
        client = self.client(signed)
        params: dict[str, Any] = {"Bucket": self.s3.bucket, "Key": self.s3.key}
        if self.s3.version:
            params["VersionId"] = self.s3.version
        return client.generate_presigned_url("get_object", Params=params, ExpiresIn=LINK_EXPIRES)

    def _get(self, signed: bool, start: int, end: int | None, headers: dict[str, str]) -> Body:
        remote = open_remote(self.link(signed), transport=self.transport, timeout=self.timeout)
        body = remote.open(start, end, headers=headers)
        if body.status == 416 and body.total is None:
            # S3 names the size in its XML error (ActualObjectSize), which the transport
            # does not keep: botocore reads it, so that a complete .part is placed as it is.
            return self.s3.open(start, end, if_range=headers.get("If-Match"))
        return self.s3.as_stored(body)  # an object stored gzipped stays as stored

    def _answer(
        self, exc: requests.HTTPError, start: int, end: int | None, if_range: str | None
    ) -> Body:
        """What an error status means: a changed object (412), or botocore's error."""
        status = exc.response.status_code if exc.response is not None else 0
        if status == 412 and (start or end is not None) and if_range:
            if end is None:  # a resume: the whole new object, as If-Range would give
                log.debug("%s changed since its .part was begun", self.display)
                return self.open(0)
            raise RemoteChangedError(
                f"{self.display} changed while it was being downloaded in pieces "
                f"(its ETag is no longer {if_range})"
            ) from None
        raise _named(_error(exc, self.client(False)), self.display) from None


def _private() -> set[tuple]:
    from .aws import _CLIENTS

    return _CLIENTS.private


def _error(exc: requests.HTTPError, client: Any = None) -> Exception:
    """botocore's ``ClientError`` for an S3 error answer: its code and message, as boto3 reads
    them from the XML body (a body-less answer: the status and reason), of the class
    ``client`` models for that code (``NoSuchKey``...), as ``get_object`` raises it."""
    _, botocore = _boto()
    response = exc.response
    status = response.status_code if response is not None else 0
    reason = (response.reason if response is not None else "") or ""
    error: dict[str, str] = {"Code": str(status), "Message": reason}
    content = response.content if response is not None else b""
    if content:
        try:
            root = ElementTree.fromstring(content)
        except ElementTree.ParseError:
            root = None
        if root is not None and root.tag == "Error":
            for child in root:
                if child.tag in ("Code", "Message", "ActualObjectSize", "Condition"):
                    error[child.tag] = child.text or ""
    headers = {k.lower(): v for k, v in (response.headers if response is not None else {}).items()}
    metadata = {"HTTPStatusCode": status, "HTTPHeaders": headers}
    answer = {"Error": error, "ResponseMetadata": metadata}
    kind = botocore.exceptions.ClientError
    if client is not None:
        kind = client.exceptions.from_code(error["Code"])
    return kind(answer, "GetObject")

"""Tests of dlutils.localserver: real HTTP over 127.0.0.1 with requests and http.client."""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import os
import socket
import threading
import time

import pytest
import requests

from dlutils import InvalidInputError
from dlutils.localserver import (
    Fault,
    LocalServer,
    endless,
    extra_bytes,
    gzip_body,
    ignore_if_range,
    no_range,
    reset_after,
    stall,
    status,
    truncate,
    wrong_content_range,
)

DATA = bytes(range(256)) * 4  # 1024 bytes, every byte value


@pytest.fixture
def session():
    with requests.Session() as s:
        s.trust_env = False  # never through a proxy from the environment
        yield s


@pytest.fixture
def server(http_server):
    """The shared server with one file; its handlers must not have failed by the end."""
    http_server.put("data/a.bin", DATA)
    yield http_server
    assert http_server.errors == []


def fetch(server, path, method="GET", headers=None):
    """One request on a fresh http.client connection: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def wait_until(condition, timeout=10.0):
    """Poll ``condition`` until it holds; the timeout only guards against hangs."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# -- plain GET and HEAD ---------------------------------------------------------------------


def test_get_sends_body_and_standard_headers(server, session):
    r = session.get(server.url_for("data/a.bin"))
    assert r.status_code == 200
    assert r.content == DATA
    assert r.headers["Content-Length"] == str(len(DATA))
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["ETag"] == f'"{hashlib.md5(DATA).hexdigest()}"'
    assert email.utils.parsedate_to_datetime(r.headers["Last-Modified"])
    assert server.errors == []


def test_head_sends_headers_only_and_ignores_range(server):
    code, headers, body = fetch(server, "/data/a.bin", "HEAD", {"Range": "bytes=0-9"})
    assert (code, body) == (200, b"")
    assert headers["Content-Length"] == str(len(DATA))
    assert headers["Accept-Ranges"] == "bytes"
    assert "ETag" in headers and "Last-Modified" in headers


def test_unknown_path_is_404_for_get_and_head(server, session):
    assert session.get(server.url_for("nope.bin")).status_code == 404
    assert session.head(server.url_for("nope.bin")).status_code == 404


def test_other_methods_get_405(server, session):
    r = session.post(server.url_for("data/a.bin"), data=b"x")
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET, HEAD"


def test_query_string_is_ignored_for_lookup_but_logged(server, session):
    r = session.get(server.url_for("data/a.bin") + "?token=abc&x=1")
    assert r.content == DATA
    (record,) = server.requests
    assert (record.path, record.query) == ("/data/a.bin", "token=abc&x=1")


def test_url_for_percent_encodes_spaces_and_unicode(http_server, session):
    http_server.put("my data/é ü.bin", b"unicode")
    url = http_server.url_for("my data/é ü.bin")
    assert url == f"{http_server.url}/my%20data/%C3%A9%20%C3%BC.bin"
    assert session.get(url).content == b"unicode"
    assert http_server.requests[0].path == "/my data/é ü.bin"


def test_url_for_escapes_query_and_fragment_characters(http_server, session):
    http_server.put("odd?name#1.bin", b"odd")
    assert session.get(http_server.url_for("odd?name#1.bin")).content == b"odd"


def test_url_is_unknown_before_start():
    server = LocalServer({"a": b"1"})
    with pytest.raises(RuntimeError, match="start"):
        server.url  # noqa: B018


def test_only_loopback_is_accepted():
    with pytest.raises(InvalidInputError, match="127.0.0.1 only"):
        LocalServer(host="0.0.0.0")


def test_files_argument_and_a_large_body_served_in_chunks(random_bytes, session):
    big = random_bytes(3 * 1024 * 1024 + 17, seed=1)
    with LocalServer({"big.bin": big, "/small.txt": b"s"}) as server:
        assert session.get(server.url_for("big.bin")).content == big
        assert session.get(server.url + "/small.txt").content == b"s"
        r = session.get(server.url_for("big.bin"), headers={"Range": "bytes=1000000-2999999"})
        assert r.content == big[1_000_000:3_000_000]


def test_keep_alive_reuses_one_connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for _ in range(3):
        conn.request("GET", "/data/a.bin")
        assert conn.getresponse().read() == DATA
    conn.close()
    assert len({r.connection for r in server.requests}) == 1


def test_64_concurrent_clients_all_succeed(server):
    results = []

    def client():
        results.append(fetch(server, "/data/a.bin")[2])

    threads = [threading.Thread(target=client) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [DATA] * 64


# -- put, delete, redirect --------------------------------------------------------------------


def test_put_changes_etag_and_last_modified_within_one_second(http_server):
    seen = set()
    for i in range(3):
        http_server.put("f.bin", b"v%d" % i)
        _, headers, _ = fetch(http_server, "/f.bin")
        seen.add((headers["ETag"], headers["Last-Modified"]))
        last_modified = email.utils.parsedate_to_datetime(headers["Last-Modified"])
        assert last_modified <= email.utils.parsedate_to_datetime(headers["Date"])
    assert len({etag for etag, _ in seen}) == len({lm for _, lm in seen}) == 3


def test_put_with_explicit_etag_last_modified_and_headers(http_server):
    http_server.put(
        "f.txt", b"hi", etag="v1", last_modified=784111777, headers={"Content-Type": "text/plain"}
    )
    _, headers, _ = fetch(http_server, "/f.txt")
    assert headers["ETag"] == '"v1"'
    assert headers["Last-Modified"] == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert headers["Content-Type"] == "text/plain"
    assert headers.get_all("Content-Type") == ["text/plain"]


def test_put_refuses_framing_headers_and_non_bytes(http_server):
    with pytest.raises(InvalidInputError, match="'Content-Length' is set by the server"):
        http_server.put("f", b"x", headers={"Content-Length": "9"})
    with pytest.raises(InvalidInputError, match="must be bytes, not str"):
        http_server.put("f", "text")
    with pytest.raises(InvalidInputError, match="path '/' is not valid"):
        http_server.put("/", b"x")


def test_content_disposition(http_server):
    http_server.put("a.bin", b"1")
    http_server.put("b.bin", b"2")
    http_server.content_disposition.update({"a.bin": "real name.bin", "b.bin": "ünï.bin"})
    assert fetch(http_server, "/a.bin")[1]["Content-Disposition"] == (
        'attachment; filename="real name.bin"'
    )
    assert fetch(http_server, "/b.bin")[1]["Content-Disposition"] == (
        "attachment; filename=\"?n?.bin\"; filename*=UTF-8''%C3%BCn%C3%AF.bin"
    )


def test_delete_makes_a_path_404(server):
    server.delete("data/a.bin")
    assert fetch(server, "/data/a.bin")[0] == 404
    with pytest.raises(KeyError, match="data/a.bin"):
        server.delete("/data/a.bin")


def test_redirect_is_followed_by_requests(server, session):
    server.redirect("old.bin", "data/a.bin", status=301)
    code, headers, _ = fetch(server, "/old.bin")
    assert (code, headers["Location"]) == (301, "/data/a.bin")
    r = session.get(server.url_for("old.bin"))
    assert (r.status_code, r.content) == (200, DATA)
    assert [h.status_code for h in r.history] == [301]


# -- ranges -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, first, last",
    [
        ("bytes=0-9", 0, 9),
        ("bytes=0-0", 0, 0),
        ("bytes=100-", 100, 1023),
        ("bytes=-24", 1000, 1023),
        ("bytes=1000-5000", 1000, 1023),  # last-pos past the end is clamped
        ("bytes=-5000", 0, 1023),  # suffix longer than the file: all of it
        ("BYTES = 5 - 6", 5, 6),
    ],
)
def test_single_ranges_get_206(server, session, spec, first, last):
    r = session.get(server.url_for("data/a.bin"), headers={"Range": spec})
    assert r.status_code == 206
    assert r.content == DATA[first : last + 1]
    assert r.headers["Content-Range"] == f"bytes {first}-{last}/{len(DATA)}"
    assert r.headers["Content-Length"] == str(last - first + 1)
    assert "ETag" in r.headers and "Last-Modified" in r.headers


@pytest.mark.parametrize("spec", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_ranges_get_416(server, session, spec):
    r = session.get(server.url_for("data/a.bin"), headers={"Range": spec})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == "bytes */1024"
    assert r.content == b""


@pytest.mark.parametrize(
    "spec", ["bytes=0-1,5-6", "bytes=9-3", "items=0-1", "bytes=abc", "bytes=-"]
)
def test_several_or_invalid_ranges_get_the_whole_body(server, session, spec):
    r = session.get(server.url_for("data/a.bin"), headers={"Range": spec})
    assert (r.status_code, r.content) == (200, DATA)


def test_ranges_of_an_empty_file(http_server, session):
    http_server.put("empty", b"")
    url = http_server.url_for("empty")
    assert session.get(url, headers={"Range": "bytes=0-"}).status_code == 416
    r = session.get(url, headers={"Range": "bytes=-5"})
    assert (r.status_code, r.content) == (200, b"")


def test_support_ranges_off(server, session):
    server.support_ranges = False
    r = session.get(server.url_for("data/a.bin"), headers={"Range": "bytes=0-9"})
    assert (r.status_code, r.content) == (200, DATA)
    assert "Accept-Ranges" not in r.headers


# -- conditional requests ---------------------------------------------------------------------


def test_if_range_with_current_etag_gets_206_and_after_a_change_200(server, session):
    url = server.url_for("data/a.bin")
    etag = session.head(url).headers["ETag"]
    r = session.get(url, headers={"Range": "bytes=10-", "If-Range": etag})
    assert (r.status_code, r.content) == (206, DATA[10:])
    server.put("data/a.bin", b"new content")
    r = session.get(url, headers={"Range": "bytes=10-", "If-Range": etag})
    assert (r.status_code, r.content) == (200, b"new content")


def test_if_range_with_a_date(server, session):
    url = server.url_for("data/a.bin")
    last_modified = session.head(url).headers["Last-Modified"]
    r = session.get(url, headers={"Range": "bytes=-4", "If-Range": last_modified})
    assert (r.status_code, r.content) == (206, DATA[-4:])
    server.put("data/a.bin", DATA)  # same bytes, new Last-Modified
    r = session.get(url, headers={"Range": "bytes=-4", "If-Range": last_modified})
    assert (r.status_code, r.content) == (200, DATA)


def test_if_range_with_a_date_that_starts_with_w(http_server, session):
    http_server.put("a.bin", DATA, last_modified=1445412480)
    wednesday = "Wed, 21 Oct 2015 07:28:00 GMT"
    r = session.get(
        http_server.url_for("a.bin"), headers={"Range": "bytes=0-0", "If-Range": wednesday}
    )
    assert (r.status_code, r.content) == (206, DATA[:1])


@pytest.mark.parametrize("if_range", ["W/{etag}", '"other"', "not a date", ""])
def test_if_range_that_does_not_match_strongly_gets_200(server, session, if_range):
    url = server.url_for("data/a.bin")
    etag = session.head(url).headers["ETag"]
    headers = {"Range": "bytes=0-0", "If-Range": if_range.format(etag=etag)}
    r = session.get(url, headers=headers)
    if if_range == "":  # an empty If-Range is no condition at all
        assert r.status_code == 206
    else:
        assert (r.status_code, r.content) == (200, DATA)


@pytest.mark.parametrize("form", ["{etag}", '"x", {etag}', "W/{etag}", "*"])
def test_if_none_match_gets_304_with_validators(server, form):
    _, headers, _ = fetch(server, "/data/a.bin")
    etag, last_modified = headers["ETag"], headers["Last-Modified"]
    code, headers, body = fetch(
        server, "/data/a.bin", headers={"If-None-Match": form.format(etag=etag)}
    )
    assert (code, body) == (304, b"")
    assert (headers["ETag"], headers["Last-Modified"]) == (etag, last_modified)


def test_if_none_match_that_differs_gets_200_even_if_not_modified_since(server):
    _, headers, _ = fetch(server, "/data/a.bin")
    conditions = {"If-None-Match": '"other"', "If-Modified-Since": headers["Last-Modified"]}
    code, _, body = fetch(server, "/data/a.bin", headers=conditions)
    assert (code, body) == (200, DATA)


def test_if_modified_since(server, session):
    url = server.url_for("data/a.bin")
    last_modified = session.head(url).headers["Last-Modified"]
    r = session.get(url, headers={"If-Modified-Since": last_modified})
    assert (r.status_code, r.content) == (304, b"")
    assert "ETag" in r.headers
    server.put("data/a.bin", DATA[::-1])
    r = session.get(url, headers={"If-Modified-Since": last_modified})
    assert (r.status_code, r.content) == (200, DATA[::-1])
    r = session.get(url, headers={"If-Modified-Since": "garbage"})
    assert r.status_code == 200


def test_head_honours_if_none_match(server, session):
    url = server.url_for("data/a.bin")
    etag = session.head(url).headers["ETag"]
    assert session.head(url, headers={"If-None-Match": etag}).status_code == 304


def test_if_match_and_if_unmodified_since_get_412_when_changed(server, session):
    url = server.url_for("data/a.bin")
    old = session.head(url).headers
    assert session.get(url, headers={"If-Match": old["ETag"]}).status_code == 200
    assert session.get(url, headers={"If-Match": "*"}).status_code == 200
    server.put("data/a.bin", b"changed")
    assert session.get(url, headers={"If-Match": old["ETag"]}).status_code == 412
    since = "Sun, 06 Nov 1994 08:49:37 GMT"
    assert session.get(url, headers={"If-Unmodified-Since": since}).status_code == 412


def test_validators_can_be_switched_off(server, session):
    server.send_etag = server.send_last_modified = False
    url = server.url_for("data/a.bin")
    r = session.get(url)
    assert "ETag" not in r.headers and "Last-Modified" not in r.headers
    r = session.get(url, headers={"Range": "bytes=0-0", "If-Range": r.headers["Date"]})
    assert r.status_code == 200  # no Last-Modified: a date never matches
    assert session.get(url, headers={"If-None-Match": "*"}).status_code == 304


# -- faults -----------------------------------------------------------------------------------


def test_status_fault_429_with_retry_after_then_normal(server, session):
    server.add_fault("data/a.bin", status(429, retry_after="3", body=b"slow down"))
    url = server.url_for("data/a.bin")
    r = session.get(url)
    assert (r.status_code, r.headers["Retry-After"], r.content) == (429, "3", b"slow down")
    assert session.get(url).content == DATA
    assert server.pending_faults("data/a.bin") == []


@pytest.mark.parametrize("code", [401, 403, 404, 500, 503])
def test_status_faults(server, session, code):
    server.add_fault("data/a.bin", status(code))
    r = session.get(server.url_for("data/a.bin"))
    assert r.status_code == code
    assert ("WWW-Authenticate" in r.headers) == (code == 401)


def test_status_fault_waits_for_get_unless_head_is_named(server, session):
    url = server.url_for("data/a.bin")
    server.add_fault("data/a.bin", status(503))
    assert session.head(url).status_code == 200
    assert session.get(url).status_code == 503
    server.add_fault("data/a.bin", status(503, methods=["GET", "HEAD"]))
    assert session.head(url).status_code == 503


def test_status_fault_on_an_unknown_path(http_server, session):
    http_server.add_fault("missing", status(500))
    assert session.get(http_server.url_for("missing")).status_code == 500
    assert session.get(http_server.url_for("missing")).status_code == 404


def test_reset_after_aborts_mid_body(server, random_bytes):
    big = random_bytes(2_000_000, seed=2)
    server.put("big.bin", big)
    server.add_fault("big.bin", reset_after(700_000))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/big.bin")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.headers["Content-Length"] == str(len(big))
    got = bytearray()
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        while chunk := resp.read1(65536):
            got += chunk
        resp.read()  # a clean EOF here would mean a truncation, not a reset
    conn.close()
    assert len(got) <= 700_000 and bytes(got) == big[: len(got)]
    (record,) = server.requests_for("big.bin")
    assert (record.bytes_sent, record.fault) == (700_000, reset_after(700_000))


def test_reset_after_delivers_exactly_nbytes_of_a_range_before_the_reset(server, random_bytes):
    big = random_bytes(1_000_000, seed=3)
    server.put("big.bin", big)
    server.add_fault("big.bin", reset_after(300_000))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=100-\r\n\r\n")
        received = bytearray()
        with pytest.raises(ConnectionResetError):
            while data := sock.recv(65536):
                received += data
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206")
    assert b"Content-Range: bytes 100-999999/1000000" in head
    assert body == big[100:300_100]


def test_reset_after_with_requests_raises(server, session):
    server.add_fault("data/a.bin", reset_after(10))
    with pytest.raises(requests.exceptions.RequestException, match="reset by peer"):
        session.get(server.url_for("data/a.bin"))
    assert session.get(server.url_for("data/a.bin")).content == DATA


def test_truncate_sends_fewer_bytes_than_content_length_then_closes(server):
    server.add_fault("data/a.bin", truncate(100))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/data/a.bin")
    resp = conn.getresponse()
    assert resp.headers["Content-Length"] == str(len(DATA))
    with pytest.raises(http.client.IncompleteRead) as caught:
        resp.read()
    assert caught.value.partial == DATA[:100]
    conn.close()
    assert fetch(server, "/data/a.bin")[2] == DATA


def test_truncate_is_seen_by_requests(server, session):
    server.add_fault("data/a.bin", truncate(100))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session.get(server.url_for("data/a.bin"))


def test_stall_fires_a_client_read_timeout_then_the_server_carries_on(server, session):
    server.add_fault("data/a.bin", stall(30, after_bytes=10))
    url = server.url_for("data/a.bin")
    with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        session.get(url, timeout=0.2)
    assert session.get(url, timeout=10).content == DATA


def test_stall_before_headers_is_a_read_timeout(server, session):
    server.add_fault("data/a.bin", stall(30, before_headers=True))
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.get(server.url_for("data/a.bin"), timeout=0.2)


def test_a_short_stall_ends_with_the_whole_body(server, session):
    server.add_fault("data/a.bin", stall(0.05, after_bytes=500))
    r = session.get(server.url_for("data/a.bin"), timeout=10)
    assert r.content == DATA


def test_no_range_fault_answers_200_with_everything(server, session):
    server.add_fault("data/a.bin", no_range())
    url = server.url_for("data/a.bin")
    r = session.get(url, headers={"Range": "bytes=5-9"})
    assert (r.status_code, r.content) == (200, DATA)
    assert "Accept-Ranges" not in r.headers
    r = session.get(url, headers={"Range": "bytes=5-9"})
    assert (r.status_code, r.content) == (206, DATA[5:10])


def raw_get(server, path, headers=b"", *, limit=None):
    """One GET over a raw socket, read until the server closes (or ``limit`` bytes came):
    (head, body) exactly as sent, whatever the framing says."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        received = bytearray()
        while (limit is None or len(received) < limit) and (data := sock.recv(65536)):
            received += data
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    return head, body


def test_gzip_body_compresses_whatever_was_accepted(server, session):
    import gzip

    server.add_fault("data/a.bin", gzip_body())
    server.add_fault("data/a.bin", gzip_body())
    url = server.url_for("data/a.bin")
    status_code, headers, body = fetch(
        server, "/data/a.bin", headers={"Accept-Encoding": "identity"}
    )
    assert (status_code, headers["Content-Encoding"]) == (200, "gzip")
    assert headers["Content-Length"] == str(len(body)) and gzip.decompress(body) == DATA
    r = session.get(url, headers={"Range": "bytes=10-19", "Accept-Encoding": "identity"})
    assert (r.status_code, r.headers["Content-Range"]) == (206, "bytes 10-19/1024")
    assert r.content == DATA[10:20]  # requests decodes it, as pooch and pyvo get it
    assert fetch(server, "/data/a.bin")[1]["Content-Encoding"] is None  # used up


def test_ignore_if_range_sends_a_range_of_the_current_version(server, session):
    url = server.url_for("data/a.bin")
    old = session.head(url).headers["ETag"]
    server.put("data/a.bin", DATA[::-1])
    asked = {"Range": "bytes=100-", "If-Range": old}
    assert session.get(url, headers=asked).status_code == 200  # a well-behaved server
    server.add_fault("data/a.bin", ignore_if_range())
    r = session.get(url, headers=asked)
    assert (r.status_code, r.content) == (206, DATA[::-1][100:])
    assert r.headers["ETag"] != old and r.headers["Content-Range"] == "bytes 100-1023/1024"


def test_wrong_content_range_lies_only_in_the_header(server, session):
    server.add_fault("data/a.bin", wrong_content_range(start=5, total=2000))
    server.add_fault("data/a.bin", wrong_content_range(end=9))
    url = server.url_for("data/a.bin")
    r = session.get(url, headers={"Range": "bytes=10-19"})
    assert (r.status_code, r.headers["Content-Range"], r.content) == (
        206, "bytes 5-19/2000", DATA[10:20],
    )  # fmt: skip
    r = session.get(url)
    assert (r.status_code, r.headers["Content-Range"], r.content) == (200, "bytes 0-9/1024", DATA)


def test_extra_bytes_follow_the_announced_body(server):
    server.add_fault("data/a.bin", extra_bytes(10))
    head, body = raw_get(server, b"/data/a.bin")
    assert b"Content-Length: 1024" in head and body == DATA + b"\xee" * 10
    server.add_fault("data/a.bin", extra_bytes(10, length=False))
    head, body = raw_get(server, b"/data/a.bin", b"Range: bytes=0-99\r\n")
    assert b"Content-Range: bytes 0-99/1024" in head and b"Content-Length" not in head
    assert body == DATA[:110]  # ten bytes past the range it names
    assert server.requests[-1].fault == extra_bytes(10, length=False)


def test_endless_never_ends_until_the_client_leaves(server):
    server.add_fault("data/a.bin", endless())
    head, body = raw_get(server, b"/data/a.bin", b"Range: bytes=0-9\r\n", limit=3 << 20)
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length" not in head
    assert len(body) >= (3 << 20) - len(head) - 4
    wait_until(lambda: server.active == 0)  # the handler saw the client go
    assert fetch(server, "/data/a.bin")[2] == DATA


def test_faults_are_used_in_order_then_requests_are_served_normally(server, session):
    url = server.url_for("data/a.bin")
    for fault in (status(503, retry_after="1"), status(500), truncate(10), no_range()):
        server.add_fault("data/a.bin", fault)
    assert session.get(url).status_code == 503
    assert session.get(url).status_code == 500
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session.get(url)
    assert session.get(url, headers={"Range": "bytes=0-0"}).status_code == 200
    assert session.get(url, headers={"Range": "bytes=0-0"}).status_code == 206
    assert [r.fault.kind if r.fault else None for r in server.requests] == [
        "status", "status", "truncate", "no_range", None,
    ]  # fmt: skip


def test_body_faults_wait_for_a_response_with_a_body(server, session):
    url = server.url_for("data/a.bin")
    etag = session.head(url).headers["ETag"]
    server.add_fault("data/a.bin", truncate(1))
    assert session.head(url).status_code == 200
    assert session.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert session.get(url, headers={"Range": "bytes=9999-"}).status_code == 416
    assert server.pending_faults("data/a.bin") == [truncate(1)]
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session.get(url)


def test_fault_arguments_are_checked(server):
    with pytest.raises(InvalidInputError, match="nbytes=-1"):
        truncate(-1)
    with pytest.raises(InvalidInputError, match="status.99"):
        status(99)
    with pytest.raises(InvalidInputError, match="not a Fault"):
        server.add_fault("data/a.bin", "reset")
    assert repr(stall(1.5, after_bytes=3)) == "stall(seconds=1.5, after_bytes=3)"
    assert repr(extra_bytes(3, length=False)) == "extra_bytes(nbytes=3, length=False)"
    with pytest.raises(InvalidInputError, match="end=-1"):
        wrong_content_range(end=-1)
    assert isinstance(no_range(), Fault)


# -- log, concurrency, rate limit, shutdown ---------------------------------------------------


def test_request_log_records_each_request(server, session):
    url = server.url_for("data/a.bin")
    session.get(url + "?v=2", headers={"Range": "bytes=0-9", "X-Test": "yes"})
    session.head(url)
    session.get(server.url_for("missing"))
    first, second, third = server.requests
    assert (first.method, first.path, first.query) == ("GET", "/data/a.bin", "v=2")
    assert (first.status, first.bytes_sent, first.range) == (206, 10, "bytes=0-9")
    assert first.headers["x-test"] == first.headers["X-TEST"] == "yes"
    assert "range" in first.headers and first.fault is None
    assert (second.method, second.status, second.bytes_sent, second.range) == ("HEAD", 200, 0, None)
    assert (third.path, third.status) == ("/missing", 404)
    assert server.requests_for("/data/a.bin") == [first, second]
    server.clear_log()
    assert server.requests == []


def test_max_concurrent_counts_requests_in_progress(server):
    for _ in range(5):
        server.add_fault("data/a.bin", stall(60))
    errors = []

    def client():
        try:
            fetch(server, "/data/a.bin")
        except (OSError, http.client.HTTPException) as error:
            errors.append(error)

    threads = [threading.Thread(target=client) for _ in range(5)]
    for t in threads:
        t.start()
    wait_until(lambda: server.active == 5)
    assert server.max_concurrent == 5
    server.stop()  # ends the stalls: the clients see short bodies
    for t in threads:
        t.join(10)
    assert server.active == 0 and len(errors) == 5


def test_max_concurrent_with_stalls_that_end(server):
    for _ in range(5):
        server.add_fault("data/a.bin", stall(0.3))
    bodies = []
    threads = [
        threading.Thread(target=lambda: bodies.append(fetch(server, "/data/a.bin")[2]))
        for _ in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert bodies == [DATA] * 5
    assert 1 <= server.max_concurrent <= 5  # how many overlapped depends on the scheduler
    wait_until(lambda: server.active == 0)


def test_rate_limit_paces_but_delivers_everything(server, session, random_bytes):
    data = random_bytes(50_000, seed=4)
    server.put("slow.bin", data)
    server.rate_limit = 500_000
    r = session.get(server.url_for("slow.bin"), timeout=30)
    assert r.content == data


def test_stop_returns_promptly_while_a_request_is_stalled(http_server):
    http_server.put("a.bin", DATA)
    http_server.add_fault("a.bin", stall(600, after_bytes=100))
    outcome = []

    def client():
        try:
            outcome.append(fetch(http_server, "/a.bin"))
        except (OSError, http.client.HTTPException) as error:
            outcome.append(error)

    thread = threading.Thread(target=client)
    thread.start()
    wait_until(lambda: http_server.active == 1)
    started = time.monotonic()
    http_server.stop()
    assert time.monotonic() - started < 10  # guards against a hang only
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome[0], http.client.IncompleteRead)
    assert http_server.active == 0 and http_server.errors == []


def test_stop_closes_idle_keep_alive_connections(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/data/a.bin")
    assert conn.getresponse().read() == DATA
    server.stop()
    with pytest.raises((OSError, http.client.HTTPException)):
        conn.request("GET", "/data/a.bin")
        conn.getresponse()
    conn.close()


def test_start_stop_and_restart(session):
    server = LocalServer({"a": b"1"})
    assert server.start() is server
    with pytest.raises(RuntimeError, match="already running"):
        server.start()
    server.stop()
    server.stop()  # a second stop does nothing
    with server:
        assert session.get(server.url_for("a")).content == b"1"
    assert "stopped" in repr(server)


# -- directory mode ---------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "root"
    (root / "sub dir").mkdir(parents=True)
    (root / "sub dir" / "b.bin").write_bytes(b"bbbb")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    return root


def test_directory_mode_serves_files_read_at_request_time(folder, session):
    with LocalServer(directory=folder) as server:
        url = server.url_for("sub dir/b.bin")
        r = session.get(url)
        assert (r.status_code, r.content) == (200, b"bbbb")
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert "Last-Modified" in r.headers
        r = session.get(url, headers={"Range": "bytes=1-2", "If-Range": r.headers["ETag"]})
        assert (r.status_code, r.content) == (206, b"bb")
        old_etag = r.headers["ETag"]
        (folder / "sub dir" / "b.bin").write_bytes(b"longer now")
        (folder / "late.bin").write_bytes(b"late")
        r = session.get(url)
        assert r.content == b"longer now" and r.headers["ETag"] != old_etag
        assert session.get(server.url_for("late.bin")).content == b"late"
        assert session.get(url, headers={"If-None-Match": r.headers["ETag"]}).status_code == 304


def test_directory_mode_never_leaves_the_folder(folder):
    (folder / "link").symlink_to(folder.parent / "secret.txt")
    with LocalServer(directory=folder) as server:
        for path in ["/../secret.txt", "/%2e%2e/secret.txt", "/sub%20dir/../../secret.txt",
                     "/link", "/sub%20dir", "/", "/nothing"]:  # fmt: skip
            assert fetch(server, path)[0] == 404, path
        assert server.errors == []


def test_directory_mode_put_files_win_and_missing_folder_is_refused(folder, session):
    with LocalServer({"sub dir/b.bin": b"memory"}, directory=folder) as server:
        assert session.get(server.url_for("sub dir/b.bin")).content == b"memory"
    with pytest.raises(InvalidInputError, match="not an existing folder"):
        LocalServer(directory=os.fspath(folder / "absent"))

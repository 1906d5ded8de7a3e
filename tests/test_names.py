"""Tests for dlutils.names: redaction, name derivation, name checks and joining inside a folder."""

from __future__ import annotations

import os
import re

import pytest

from dlutils import InvalidInputError, UnsafePathError
from dlutils.names import (
    check_name,
    join_inside,
    name_from_content_disposition,
    name_from_url,
    redact,
)

# ---------------------------------------------------------------------------------------------
# redact
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("https://bob:hunter2@example.org/a.bin", "https://bob:REDACTED@example.org/a.bin"),
        ("https://ghp_TOKEN@github.com/x.tgz", "https://REDACTED@github.com/x.tgz"),
        ("https://bob:p@ss:w@h/a", "https://bob:REDACTED@h/a"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIA%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
            "&X-Amz-Security-Token=FQoG&X-Amz-Signature=abc123&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=REDACTED&X-Amz-Security-Token=REDACTED"
            "&X-Amz-Signature=REDACTED&X-Amz-Expires=60",
        ),
        (
            "https://storage.googleapis.com/b/o?X-Goog-Signature=deadbeef&X-Goog-Expires=60",
            "https://storage.googleapis.com/b/o?X-Goog-Signature=REDACTED&X-Goog-Expires=60",
        ),
        (
            "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sp=r&sig=abc%2Bdef%3D",
            "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sp=r&sig=REDACTED",
        ),
        (
            "https://h/a.bin?access_token=ya29.xyz&alt=media",
            "https://h/a.bin?access_token=REDACTED&alt=media",
        ),
    ],
)
def test_redact_removes_credentials(link, expected):
    assert redact(link) == expected


@pytest.mark.parametrize(
    "link",
    [
        "https://example.org/data/a%20b.bin?part=1&size=large#frag",
        "s3://bucket/key.tgz",
        "http://127.0.0.1:8080/x",
        "https://h/p?q=%2Fkept%20as%20sent",
    ],
)
def test_redact_leaves_links_without_secrets_unchanged(link):
    assert redact(link) == link


def test_redact_never_echoes_the_secret():
    out = redact("https://u:hunter2@h/a?sig=s3cr3t&X-Amz-Signature=s1gn")
    assert "hunter2" not in out and "s3cr3t" not in out and "s1gn" not in out


def test_redact_unparsable_link():
    assert redact("http://[::1/x?sig=secret") == "<unparsable link>"


# ---------------------------------------------------------------------------------------------
# name_from_url
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/files/my%20file.pdf?user_id=123#top", "my file.pdf"),
        ("https://example.com/a/b/c.tar.gz", "c.tar.gz"),
        ("https://example.com/files/README", "README"),
        ("http://x/service?file=/location/myfile.pdf&size=large", "myfile.pdf"),
        ("http://x/dl?f=C:%5Cdir%5Cx.zip", "x.zip"),
        ("http://x/get?file=..%2F..%2Fsecret.txt", "secret.txt"),
        ("http://x/get?id=7", "get"),
        ("http://x/get?f=..", "get"),
        ("http://host/", ""),
        ("http://host", ""),
    ],
)
def test_name_from_url(url, expected):
    assert name_from_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://h/..%2F..%2Fetc%2Fpasswd",
        "http://h/..%5C..%5Cwindows%5Cwin.ini",
        "http://h/%2E%2E",
        "http://h/%2Fetc%2Fpasswd",
        "http://h/a%00.txt",
        "http://h/",
    ],
)
def test_percent_encoded_traversal_from_url_is_rejected_by_check_name(url):
    name = name_from_url(url)
    with pytest.raises(UnsafePathError, match="is not safe"):
        check_name(name)


# ---------------------------------------------------------------------------------------------
# name_from_content_disposition
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('attachment; filename="data.csv"', "data.csv"),
        ("attachment; filename=plain.txt", "plain.txt"),
        ('attachment; filename="a b;c.txt"', "a b;c.txt"),
        ('attachment; filename="a\\"b.txt"', 'a"b.txt'),
        ("attachment; filename*=UTF-8''na%C3%AFve.txt", "naïve.txt"),
        ("attachment; filename*=iso-8859-1''caf%E9.txt", "café.txt"),
        ('attachment; filename="../../etc/passwd"', "../../etc/passwd"),  # as sent
        ("attachment", None),
        ("inline", None),
        ('attachment; filename=""', None),
        ("", None),
        (None, None),
    ],
)
def test_name_from_content_disposition(header, expected):
    assert name_from_content_disposition(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "attachment; filename=\"fallback.txt\"; filename*=UTF-8''na%C3%AFve.txt",
        "attachment; filename*=UTF-8''na%C3%AFve.txt; filename=\"fallback.txt\"",
    ],
)
def test_content_disposition_filename_star_wins(header):
    assert name_from_content_disposition(header) == "naïve.txt"


# ---------------------------------------------------------------------------------------------
# check_name
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.bin", "a.bin"),
        ("train/shard-0001.tar", "train/shard-0001.tar"),
        ("a\\b\\c.txt", "a/b/c.txt"),
        ("...", "..."),
        ("a..b", "a..b"),
        (".hidden", ".hidden"),
        ("a/~b", "a/~b"),
        ("naïve.txt", "naïve.txt"),
    ],
)
def test_check_name_accepts_safe_relative_names(name, expected):
    assert check_name(name) == expected


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("..", "'..' segment"),
        ("../etc/passwd", "'..' segment"),
        ("a/../b", "'..' segment"),
        ("a/..", "'..' segment"),
        ("..\\x", "'..' segment"),
        ("a\\..\\..\\b", "'..' segment"),
        (".", "'.' segment"),
        ("./a", "'.' segment"),
        ("a/./b", "'.' segment"),
        ("/etc/passwd", "absolute path"),
        ("\\\\server\\share\\x", "absolute path"),
        ("C:\\x", "absolute path"),
        ("c:x", "absolute path"),
        ("~/x", "starts with '~'"),
        ("~user", "starts with '~'"),
        ("a\x00b", "NUL byte"),
        ("a/", "ends with a separator"),
        ("a\\", "ends with a separator"),
        ("a//b", "empty segment"),
    ],
)
def test_check_name_rejects_unsafe_names(name, reason):
    expected = rf"^name {re.escape(repr(name))} is not safe: .*{re.escape(reason)}"
    with pytest.raises(UnsafePathError, match=expected):
        check_name(name)


def test_check_name_error_is_a_value_error_and_uses_what():
    with pytest.raises(ValueError, match=r"^key '\.\./x' is not safe"):
        check_name("../x", what="key")


def test_check_name_rejects_non_string():
    with pytest.raises(InvalidInputError, match="expected a string"):
        check_name(b"a.bin")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# join_inside
# ---------------------------------------------------------------------------------------------


def test_join_inside_returns_unresolved_join(tmp_path):
    assert join_inside(tmp_path, "a\\b/c.bin") == os.path.join(str(tmp_path), "a", "b", "c.bin")
    assert join_inside("data", "train/a.bin") == os.path.join("data", "train", "a.bin")


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "~/x", "a//b"])
def test_join_inside_checks_the_name(tmp_path, name):
    with pytest.raises(UnsafePathError, match="is not safe"):
        join_inside(tmp_path, name)


@pytest.fixture
def dest_with_links(tmp_path):
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    (dest / "real").mkdir(parents=True)
    outside.mkdir()
    (dest / "out").symlink_to(outside, target_is_directory=True)
    (dest / "in").symlink_to(dest / "real", target_is_directory=True)
    (dest / "file-out").symlink_to(tmp_path / "secret.txt")  # dangling, outside
    (dest / "file-in").symlink_to(dest / "real" / "x.bin")  # dangling, inside
    return dest


@pytest.mark.parametrize("name", ["out/x.bin", "out", "file-out"])
def test_join_inside_refuses_symlinks_leading_outside(dest_with_links, name):
    with pytest.raises(UnsafePathError, match="is not safe"):
        join_inside(dest_with_links, name)


@pytest.mark.parametrize("name", ["in/x.bin", "file-in", "real/x.bin", "new/dir/x.bin"])
def test_join_inside_allows_symlinks_staying_inside(dest_with_links, name):
    assert join_inside(dest_with_links, name) == os.path.join(
        str(dest_with_links), *name.split("/")
    )


def test_join_inside_through_a_symlinked_destination(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert join_inside(link, "a.bin") == os.path.join(str(link), "a.bin")


@pytest.mark.parametrize(
    ("link", "name"),
    [
        ("https://h/a%20b.bin?x=1#f", "a b.bin"),
        ("s3://bucket/dir/a%20b.bin", "a%20b.bin"),
        ("gs://bucket/what?.txt", "what?.txt"),
        ("ais://h:8080/b/dir/#1.tgz", "#1.tgz"),
    ],
)
def test_object_names_of_bucket_keys_are_literal(link, name):
    from dlutils.names import object_name

    assert object_name(link) == name


# ------------------------------------------------------------------- redact_text, forwardable

LEAKY_TEXTS = [
    # urllib3 quotes only the path and query of the link it could not reach
    "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: "
    "/a.bin?X-Amz-Signature=SIGVALUE&X-Amz-Credential=CREDVALUE&token=TOKVALUE&part=1 "
    "(Caused by NewConnectionError('Failed to establish a new connection'))",
    "GET https://bob:PWVALUE@example.org/x?sig=SIGVALUE failed",
    "headers were {'X-Api-Key': 'KEYVALUE', 'Accept': '*/*'}",
    '{"access_token": "TOKVALUE", "name": "a.bin"}',
    "Authorization: Bearer TOKVALUE",
    "GET https://host/x failed: Authorization: Bearer TOKVALUE",
    "Authorization: token TOKVALUE\r\nCookie: sid=COOKIEVALUE; theme=dark",
    "X-Api-Key: KEYVALUE",
    "refused token='TOKVALUE' and password=PWVALUE",
    "a token hf_abcdefghijklmnopqrstuvwxyz0123 in prose",
    "/p?X-Amz-Signature%3DSIGVALUE",
    "/maps?key=KEYVALUE&q=1 and /p?a=1&Policy=PWVALUE&Key-Pair-Id=x",
]


@pytest.mark.parametrize("text", LEAKY_TEXTS)
def test_redact_text_finds_credentials_in_any_text(text):
    from dlutils.names import redact_text

    clean = redact_text(text)
    for secret in ("SIGVALUE", "CREDVALUE", "TOKVALUE", "PWVALUE", "KEYVALUE", "COOKIEVALUE"):
        assert secret not in clean
    assert "hf_abcdefghij" not in clean
    assert "REDACTED" in clean
    assert redact_text(clean) == clean  # a second pass changes nothing


@pytest.mark.parametrize(
    "text",
    [
        "object key='train/a.bin' is not valid",
        "got uri=None, bucket_name='b', key=None",
        "session=3 auth=basic policy=strict",
        "no download job 'dnl-0123456789'",
        "the token given was refused: use a token with access",
        "https://host/data/a.bin?part=1&size=large",
        "HTTPConnectionPool(host='127.0.0.1', port=9): Read timed out.",
    ],
)
def test_redact_text_leaves_ordinary_text_alone(text):
    from dlutils.names import redact_text

    assert redact_text(text) == text


@pytest.mark.parametrize(
    "origin, target, allowed",
    [
        ("https://host/a", "https://host/b?x=1", True),
        ("https://host/a", "https://HOST:443/b", True),
        ("http://host:80/a", "http://host/b", True),
        ("https://host/a", "http://host/a", False),  # down to plain http
        ("http://host/a", "https://host/a", False),  # another scheme is another origin
        ("https://host/a", "https://other/a", False),
        ("https://host/a", "https://host.evil.org/a", False),
        ("http://127.0.0.1:8000/a", "http://127.0.0.1:8001/a", False),
        ("https://host/a", "not a link", False),
        ("https://host/a", "https://host:99999/a", False),  # unparsable port
    ],
)
def test_forwardable_is_same_scheme_host_and_port_only(origin, target, allowed):
    from dlutils.names import forwardable

    assert forwardable(origin, target) is allowed

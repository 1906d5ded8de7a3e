"""Tests for dlutils.freshness: header parsing, the AIStore freshness rule, and the manifest."""

from __future__ import annotations

import email.message
import hashlib
import multiprocessing
import os
import pickle
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlutils.errors import DownloadError, InvalidInputError, UnsafePathError
from dlutils.freshness import Manifest, ObjectAttrs, attrs_from_headers, file_attrs, same_object

MD5 = "9e107d9d372bb6826bd81d3542a419d6"
MD5_B64 = "nhB9nTcrtoJr2B01QqQZ1g=="
SHA256 = "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"
SHA256_B64 = "16j7swfXgJRpypq8sAguT41WUeRtPNt2LQLQvzfJ5ZI="
CRC = "e3069283"  # crc32c of b"123456789"
CRC_B64 = "4waSgw=="
OUTSIDE = "outside the manifest root"

# ---------------------------------------------------------------------------------------------
# ObjectAttrs
# ---------------------------------------------------------------------------------------------


def test_attrs_normalise_digests_and_empty_strings():
    a = ObjectAttrs(size=3, md5=MD5.upper(), crc32c=CRC.upper(), version="", etag="")
    assert a.md5 == MD5 and a.crc32c == CRC
    assert a.version is None and a.etag is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": -1}, "size -1 is not valid"),
        ({"size": "12"}, "size '12' is not valid"),
        ({"size": True}, "size True is not valid"),
        ({"md5": "abc"}, "md5 'abc' is not valid: give 32 hex digits"),
        ({"crc32c": "zzzzzzzz"}, "crc32c 'zzzzzzzz' is not valid: give 8 hex digits"),
        ({"sha256": MD5}, "sha256 .* is not valid: give 64 hex digits"),
        ({"etag": 5}, "etag 5 is not valid: give a string"),
    ],
)
def test_attrs_reject_malformed_values(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        ObjectAttrs(**kwargs)


def test_strong_etag_is_none_for_weak_etags():
    assert ObjectAttrs(etag='"abc"').strong_etag == '"abc"'
    assert ObjectAttrs(etag='W/"abc"').strong_etag is None
    assert ObjectAttrs().strong_etag is None


def test_dict_round_trip_ignores_unknown_keys():
    a = ObjectAttrs(size=0, etag='W/"x"', md5=MD5, source="s3://b/k")
    assert a.to_dict() == {"size": 0, "etag": 'W/"x"', "md5": MD5, "source": "s3://b/k"}
    assert ObjectAttrs.from_dict({**a.to_dict(), "added_in_a_later_version": 1}) == a


def test_merged_fills_only_unknown_fields():
    a = ObjectAttrs(size=3, etag='"a"').merged(ObjectAttrs(size=4, etag='"b"', md5=MD5))
    assert a == ObjectAttrs(size=3, etag='"a"', md5=MD5)


def test_conditional_headers():
    a = ObjectAttrs(etag='W/"x"', last_modified="Wed, 21 Oct 2015 07:28:00 GMT")
    assert a.conditional_headers() == {
        "If-None-Match": 'W/"x"',
        "If-Modified-Since": "Wed, 21 Oct 2015 07:28:00 GMT",
    }
    assert ObjectAttrs(size=1).conditional_headers() == {}


# ---------------------------------------------------------------------------------------------
# attrs_from_headers
# ---------------------------------------------------------------------------------------------


def test_generic_server_headers():
    url = "https://data.example.org/files/a.bin"
    a = attrs_from_headers(
        url,
        {
            "ETag": f'"{MD5}"',
            "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT",
            "Content-Length": "1234",
        },
    )
    assert a == ObjectAttrs(
        size=1234,
        etag=f'"{MD5}"',  # kept as sent, quotes included
        last_modified="Wed, 21 Oct 2015 07:28:00 GMT",
        source=url,
    )
    assert a.md5 is None  # a 32-hex ETag means nothing on a server that is not S3


def test_header_names_are_case_insensitive():
    a = attrs_from_headers("https://x.org/f", {"etag": 'W/"1"', "CONTENT-LENGTH": "7"})
    assert (a.etag, a.size) == ('W/"1"', 7)


def test_content_md5_is_the_md5():
    a = attrs_from_headers("https://x.org/f", {"Content-MD5": MD5_B64, "Content-Length": "43"})
    assert a.md5 == MD5
    assert attrs_from_headers("https://x.org/f", {"Content-MD5": "not base64!"}).md5 is None


@pytest.mark.parametrize(
    "content_range, size",
    [
        ("bytes 0-9/1000", 1000),
        ("bytes 100-199/200", 200),
        ("bytes */500", 500),
        ("bytes 0-9/*", None),
    ],
)
def test_content_range_total_is_the_size(content_range, size):
    a = attrs_from_headers(
        "https://x.org/f", {"Content-Range": content_range, "Content-Length": "10"}
    )
    assert a.size == size


def test_credentials_are_not_recorded_in_source():
    a = attrs_from_headers("https://user:secret@x.org:8443/f?x=1", {})
    assert a.source == "https://x.org:8443/f?x=1"


def test_s3_single_part_etag_is_the_md5():
    a = attrs_from_headers(
        "https://bucket.s3.us-east-1.amazonaws.com/key",
        {
            "ETag": f'"{MD5}"',
            "Content-Length": "43",
            "x-amz-version-id": "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY",
            "x-amz-request-id": "0A49CE4060975EAC",
        },
    )
    assert a.md5 == MD5
    assert a.etag == f'"{MD5}"'
    assert a.version == "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
    assert a.size == 43


def test_s3_multipart_etag_is_not_an_md5():
    a = attrs_from_headers(
        "s3://bucket/big.tar", {"ETag": f'"{MD5}-12"', "x-amz-version-id": "null"}
    )
    assert a.md5 is None
    assert a.etag == f'"{MD5}-12"'
    assert a.version is None  # "null" is what an unversioned bucket says


def test_s3_is_recognised_by_headers_alone():
    a = attrs_from_headers(
        "http://127.0.0.1:5000/bucket/key", {"ETag": f'"{MD5}"', "x-amz-id-2": "x"}
    )
    assert a.md5 == MD5


def test_s3_kms_encrypted_etag_is_not_an_md5():
    headers = {"ETag": f'"{MD5}"', "x-amz-server-side-encryption": "aws:kms"}
    assert attrs_from_headers("s3://b/k", headers).md5 is None


def test_s3_additional_checksums():
    a = attrs_from_headers(
        "s3://b/k", {"x-amz-checksum-sha256": SHA256_B64, "x-amz-checksum-crc32c": CRC_B64}
    )
    assert (a.sha256, a.crc32c) == (SHA256, CRC)
    composite = attrs_from_headers(
        "s3://b/k",
        {"x-amz-checksum-crc32c": CRC_B64 + "-3", "x-amz-checksum-type": "COMPOSITE"},
    )
    assert composite.crc32c is None  # a checksum of part checksums, not of the object


def test_gcs_hash_generation_and_stored_length():
    a = attrs_from_headers(
        "https://storage.googleapis.com/bucket/obj",
        {
            "x-goog-hash": f"crc32c={CRC_B64},md5={MD5_B64}",
            "x-goog-generation": "1360887697105000",
            "x-goog-stored-content-length": "43",
            "Content-Length": "20",  # e.g. a ranged response
            "ETag": '"CKih16GjycICEAE="',
        },
    )
    assert (a.crc32c, a.md5, a.version, a.size) == (CRC, MD5, "1360887697105000", 43)


def test_gcs_hash_repeated_header():
    msg = email.message.Message()  # http.client's header type keeps repeated headers apart
    msg["x-goog-hash"] = f"crc32c={CRC_B64}"
    msg["x-goog-hash"] = f"md5={MD5_B64}"
    a = attrs_from_headers("gs://bucket/obj", msg)
    assert (a.crc32c, a.md5) == (CRC, MD5)


def test_huggingface_linked_etag_and_size():
    url = "https://huggingface.co/org/model/resolve/main/model.safetensors"
    a = attrs_from_headers(
        url,
        {
            "Content-Length": "1093",  # the redirect's body
            "ETag": '"redirect-etag"',
            "X-Linked-Etag": f'"{SHA256}"',
            "X-Linked-Size": "548105171",
            "X-Repo-Commit": "a9b8c7d6e5f4a9b8c7d6e5f4a9b8c7d6e5f4a9b8",
            "Location": "https://cdn-lfs.huggingface.co/...",
        },
    )
    assert a.sha256 == SHA256
    assert a.etag == f'"{SHA256}"'
    assert a.size == 548105171
    # The repository's commit changes when any file changes: it is no version of this file.
    assert a.version is None
    assert a.source == url


# ---------------------------------------------------------------------------------------------
# same_object: the rule
# ---------------------------------------------------------------------------------------------

URL = "https://x.org/a.bin"
OTHER = "https://mirror.example.net/a.bin"
LM = "Wed, 21 Oct 2015 07:28:00 GMT"


def A(**kw):
    return ObjectAttrs(**kw)


E, W, LM2 = '"e"', 'W/"e"', "Thu, 22 Oct 2015 07:28:00 GMT"
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"

# (id, local, remote or None for "the same as local", current?)
RULE = [
    ("only-size", A(size=5), None, False),
    ("nothing-known", A(), None, False),
    (
        "size-mismatch",
        A(size=5, md5=MD5, etag=E, source=URL),
        A(size=6, md5=MD5, etag=E, source=URL),
        False,
    ),
    ("strong-etag-same-source", A(size=5, etag=E, source=URL), None, True),
    ("strong-etag-no-source", A(size=5, etag=E), A(size=5, etag=E, source=URL), False),
    ("strong-etag-other-source", A(etag=E, source=OTHER), A(etag=E, source=URL), False),
    ("weak-etag-same-source", A(size=5, etag=W, source=URL), None, False),
    ("weak-etag-plus-version", A(etag=W, version="7", source=URL), None, False),
    ("weak-vs-strong-same-tag", A(etag=W, md5=MD5), A(etag=E, md5=MD5), True),
    ("md5-alone", A(size=5, md5=MD5), None, True),
    ("sha256-alone", A(sha256=SHA256), None, True),
    ("crc32c-alone-not-enough", A(size=5, crc32c=CRC), None, False),
    ("crc32c-plus-version", A(size=5, crc32c=CRC, version="7"), None, True),
    ("crc32c-plus-strong-etag", A(crc32c=CRC, etag=E), None, True),
    ("version-alone", A(size=5, version="7", source=URL), None, False),
    ("version-plus-strong-etag", A(version="7", etag=E), None, True),
    # an ETag whose value is a matched digest or version is the same evidence, counted once
    ("etag-equal-to-crc32c-counts-once", A(crc32c=CRC, etag=f'"{CRC}"'), None, False),
    ("etag-equal-to-version-counts-once", A(version="v9", etag='"v9"'), None, False),
    ("s3-etag-equal-to-md5", A(md5=MD5, etag=f'"{MD5}"'), None, True),
    ("last-modified-is-not-evidence", A(last_modified=LM, version="7"), None, False),
    # any attribute known on both sides and different
    ("md5-conflict", A(md5=MD5, sha256=SHA256), A(md5="0" * 32, sha256=SHA256), False),
    ("crc32c-conflict", A(md5=MD5, crc32c=CRC), A(md5=MD5, crc32c="0" * 8), False),
    ("version-conflict", A(md5=MD5, version="7"), A(md5=MD5, version="8"), False),
    ("etag-conflict", A(md5=MD5, etag='"a"', source=URL), A(md5=MD5, etag=E, source=URL), False),
    ("weak-etag-conflict", A(md5=MD5, etag='W/"a"'), A(md5=MD5, etag=W), False),
    ("last-modified-conflict", A(md5=MD5, last_modified=LM), A(md5=MD5, last_modified=LM2), False),
    (
        "last-modified-rfc850",
        A(md5=MD5, last_modified=LM),
        A(md5=MD5, last_modified="Wednesday, 21-Oct-15 07:28:00 GMT"),
        True,
    ),
    # version and ETag of another known source are not compared; digests still decide
    (
        "other-source-digest-decides",
        A(md5=MD5, version="1", source=OTHER),
        A(md5=MD5, version="2", source=URL),
        True,
    ),
    (
        "other-source-no-digest",
        A(version="1", etag=E, source=OTHER),
        A(version="1", etag=E, source=URL),
        False,
    ),
    # unknown size on either side: the gate is skipped, the rest decides
    ("remote-size-unknown-md5", A(size=5, md5=MD5), A(md5=MD5), True),
    ("local-size-unknown-etag", A(etag=E, source=URL), A(size=5, etag=E, source=URL), True),
    ("sizes-unknown-crc32c-only", A(crc32c=CRC), None, False),
    ("empty-files", A(size=0, md5=EMPTY_MD5), None, True),
]


@pytest.mark.parametrize("local, remote, current", [r[1:] for r in RULE], ids=[r[0] for r in RULE])
def test_same_object_rule(local, remote, current):
    remote = local if remote is None else remote
    assert same_object(local, remote) is current
    assert same_object(remote, local) is current  # the rule is symmetric


def test_same_object_on_parsed_s3_headers():
    headers = {"ETag": f'"{MD5}"', "Content-Length": "43", "x-amz-version-id": "v1"}
    local = attrs_from_headers("s3://b/k", headers)
    assert same_object(local, attrs_from_headers("s3://b/k", headers))
    changed = {**headers, "ETag": '"0123456789abcdef0123456789abcdef"', "x-amz-version-id": "v2"}
    assert not same_object(local, attrs_from_headers("s3://b/k", changed))


digests = st.fixed_dictionaries(
    {},
    optional={
        "size": st.integers(0, 3),
        "version": st.sampled_from(["1", "2"]),
        "etag": st.sampled_from(['"a"', '"b"', 'W/"a"']),
        "md5": st.sampled_from([MD5, "0" * 32]),
        "crc32c": st.sampled_from([CRC, "0" * 8]),
        "source": st.sampled_from([URL, OTHER]),
    },
).map(lambda kw: ObjectAttrs(**kw))


@given(digests, digests)
def test_same_object_properties(a, b):
    assert same_object(a, b) == same_object(b, a)
    if a.md5 and b.md5 and a.md5 != b.md5:
        assert not same_object(a, b)
    if a.size is not None and b.size is not None and a.size != b.size:
        assert not same_object(a, b)
    if a.version and b.version and a.version != b.version and a.source == b.source:
        assert not same_object(a, b)


# ---------------------------------------------------------------------------------------------
# file_attrs
# ---------------------------------------------------------------------------------------------


def test_file_attrs(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"123456789")
    assert file_attrs(p) == ObjectAttrs(size=9)
    a = file_attrs(str(p), checksums=["md5", "sha256", "crc32c"])
    assert a.md5 == hashlib.md5(b"123456789").hexdigest()
    assert a.sha256 == hashlib.sha256(b"123456789").hexdigest()
    assert a.crc32c == CRC
    assert file_attrs(p, checksums="md5").md5 == a.md5  # one name alone is fine too


def test_file_attrs_rejects_algorithms_without_a_field(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"")
    with pytest.raises(InvalidInputError, match="'sha1' cannot be recorded.*md5, crc32c, sha256"):
        file_attrs(p, checksums=["sha1"])


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------


def write(root: Path, name: str, data: bytes = b"data") -> Path:
    p = root / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


@pytest.fixture
def manifest(tmp_path):
    with Manifest(tmp_path) as m:
        yield m


def test_put_get_round_trip(tmp_path, manifest):
    p = write(tmp_path, "sub/a.bin")
    attrs = ObjectAttrs(size=4, etag='"e1"', md5=MD5, source="https://x.org/a.bin")
    manifest.put(p, attrs)
    assert manifest.get(p) == attrs
    assert manifest.get("sub/a.bin") == attrs
    assert manifest.get(os.path.join("sub", "x", "..", "a.bin")) == attrs
    assert p in manifest and "sub/a.bin" in manifest
    assert manifest.root == str(tmp_path.resolve()) and os.path.isabs(manifest.root)
    assert (tmp_path / Manifest.FILENAME).is_file()
    assert Manifest.FILENAME == ".dlutils-manifest.sqlite"


def test_put_replaces_and_remove_forgets(tmp_path, manifest):
    write(tmp_path, "a")
    manifest.put("a", ObjectAttrs(version="1"))
    manifest.put("a", ObjectAttrs(version="2"))
    assert manifest.get("a") == ObjectAttrs(version="2")
    manifest.remove("a")
    assert manifest.get("a") is None and "a" not in manifest


def test_put_needs_the_file(manifest):
    with pytest.raises(FileNotFoundError):
        manifest.put("missing.bin", ObjectAttrs(size=1))


def test_records_survive_reopening(tmp_path):
    write(tmp_path, "a")
    with Manifest(tmp_path) as m:
        m.put("a", ObjectAttrs(md5=MD5))
    with Manifest(str(tmp_path)) as m:
        assert m.get("a") == ObjectAttrs(md5=MD5)


def test_record_invalid_after_size_change(tmp_path, manifest):
    p = write(tmp_path, "a", b"1234")
    manifest.put(p, ObjectAttrs(size=4, md5=MD5))
    p.write_bytes(b"12345")
    assert manifest.get(p) is None
    assert p not in manifest


def test_record_invalid_after_mtime_change_same_size(tmp_path, manifest):
    p = write(tmp_path, "a", b"1234")
    manifest.put(p, ObjectAttrs(size=4, md5=MD5))
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert p.stat().st_size == 4
    assert manifest.get(p) is None


def test_record_invalid_after_file_deleted_or_replaced_by_a_folder(tmp_path, manifest):
    p = write(tmp_path, "a")
    manifest.put(p, ObjectAttrs(size=4))
    p.unlink()
    assert manifest.get(p) is None
    p.mkdir()
    assert manifest.get(p) is None


def test_reads_create_nothing(tmp_path):
    m = Manifest(tmp_path)
    assert m.get("a") is None
    assert "a" not in m
    assert list(m.records()) == []
    assert m.get_partial("a") is None
    m.remove("a")
    m.drop_partial("a")
    m.close()
    assert os.listdir(tmp_path) == []


def test_records_prefix_streams_in_key_order(tmp_path, manifest):
    names = [f"train/{i:04d}.bin" for i in range(1100)]  # more than one page
    names += ["train.txt", "trainer/x", "test/0.bin", "val/0.bin"]
    for name in names:
        manifest.put(write(tmp_path, name), ObjectAttrs(version=name))
    it = manifest.records("train/")
    assert iter(it) is it  # a lazy iterator, not a list
    got = list(it)
    assert [k for k, _ in got] == sorted(n for n in names if n.startswith("train/"))
    assert all(a.version == k for k, a in got)
    assert [k for k, _ in manifest.records("train")] == sorted(
        n for n in names if n.startswith("train")
    )
    assert len(list(manifest.records())) == len(names)
    assert list(manifest.records("nothing/")) == []


def test_records_skip_files_changed_by_hand_and_tolerate_puts_while_iterating(tmp_path, manifest):
    for i in range(1100):
        manifest.put(write(tmp_path, f"d/{i:04d}"), ObjectAttrs(version=str(i)))
    (tmp_path / "d/0005").write_bytes(b"edited by hand")
    seen = []
    for key, _attrs in manifest.records("d/"):
        seen.append(key)
        if key == "d/0600":
            manifest.put(write(tmp_path, "d/zzzz"), ObjectAttrs(version="new"))
    assert "d/0005" not in seen
    assert len(seen) == 1100  # 1099 valid records, and the one put while iterating


def test_partial_journal(tmp_path, manifest):
    final = write(tmp_path, "big.bin")
    info = {"validator": '"etag"', "total": 123, "segments": [[0, 60, 60], [61, 122, 10]]}
    manifest.put_partial("big.bin", info)
    assert manifest.get_partial(final) == info  # keyed by the final path, however given
    info["segments"][1][2] = 40
    manifest.put_partial(final, info)
    assert manifest.get_partial("big.bin")["segments"][1][2] == 40
    manifest.drop_partial("big.bin")
    assert manifest.get_partial("big.bin") is None


def test_put_drops_the_partial_record(tmp_path, manifest):
    final = write(tmp_path, "big.bin")
    manifest.put_partial(final, {"total": 4})
    manifest.put(final, ObjectAttrs(size=4))
    assert manifest.get_partial(final) is None
    assert manifest.get(final) == ObjectAttrs(size=4)


def test_partial_needs_json(tmp_path, manifest):
    with pytest.raises(InvalidInputError, match="'a.bin' must be JSON-serialisable"):
        manifest.put_partial("a.bin", {"when": object()})


@pytest.mark.parametrize("bad", ["../escape.bin", "a/../../escape.bin", "/etc/passwd"])
def test_path_outside_root_rejected(tmp_path, manifest, bad):
    with pytest.raises(UnsafePathError, match=OUTSIDE):
        manifest.get(bad)
    with pytest.raises(ValueError, match=OUTSIDE):
        manifest.put_partial(bad, {})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("root_itself", ["", ".", "a/.."])
def test_root_itself_rejected(tmp_path, manifest, root_itself):
    with pytest.raises(UnsafePathError, match="is the manifest root itself, not a file under it"):
        manifest.get(root_itself)
    with pytest.raises(UnsafePathError, match="manifest root itself"):
        manifest.get(tmp_path)


def test_absolute_path_outside_root_rejected(tmp_path):
    inner = tmp_path / "root"
    inner.mkdir()
    neighbour = write(tmp_path, "rootless/a.bin")  # shares a string prefix with the root
    with Manifest(inner) as m, pytest.raises(UnsafePathError, match=OUTSIDE):
        m.put(neighbour, ObjectAttrs())


def test_wal_and_schema_version(tmp_path, manifest):
    manifest.put(write(tmp_path, "a"), ObjectAttrs())
    with sqlite3.connect(tmp_path / Manifest.FILENAME) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1


def test_newer_schema_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / Manifest.FILENAME)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with Manifest(tmp_path) as m, pytest.raises(DownloadError, match="schema version 99.*upgrade"):
        m.get("a")


def test_pickles_for_process_executors(tmp_path, manifest):
    manifest.put(write(tmp_path, "a"), ObjectAttrs(md5=MD5))
    with pickle.loads(pickle.dumps(manifest)) as copy:
        assert copy.root == manifest.root
        assert copy.get("a") == ObjectAttrs(md5=MD5)


def test_many_threads_put_at_once_and_close_closes_all(tmp_path):
    threads, per = 8, 250
    for t in range(threads):
        for i in range(per):
            write(tmp_path, f"t{t}/{i}", b"x" * (i % 5))
    m = Manifest(tmp_path)
    errors = []
    barrier = threading.Barrier(threads)

    def work(t):
        try:
            barrier.wait()
            for i in range(per):
                m.put(f"t{t}/{i}", ObjectAttrs(size=i % 5, etag=f'"{t}-{i}"'))
                assert m.get(f"t{t}/{i}") is not None
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert errors == []
    assert len(list(m.records())) == threads * per
    assert m.get("t7/249") == ObjectAttrs(size=4, etag='"7-249"')
    m.close()
    # The last connection to close checkpoints and removes the WAL: proof all were closed.
    assert not (tmp_path / (Manifest.FILENAME + "-wal")).exists()
    assert m.get("t0/0") == ObjectAttrs(size=0, etag='"0-0"')  # usable again after close
    m.close()


def _put_in_child(manifest, name):
    manifest.put(name, ObjectAttrs(version="child"))


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork start method"
)
def test_forked_child_opens_its_own_connection(tmp_path, manifest):
    manifest.put(write(tmp_path, "parent"), ObjectAttrs(version="parent"))
    write(tmp_path, "child")
    child = multiprocessing.get_context("fork").Process(
        target=_put_in_child, args=(manifest, "child")
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert manifest.get("child") == ObjectAttrs(version="child")
    assert manifest.get("parent") == ObjectAttrs(version="parent")


WORKER = """
import os, sys, time
from dlutils.freshness import Manifest, ObjectAttrs
root, n, start = sys.argv[1], int(sys.argv[2]), sys.argv[3]
while not os.path.exists(start):
    time.sleep(0.001)
with Manifest(root) as m:
    for i in range(200):
        m.put(f"p{n}/{i}", ObjectAttrs(version=f"{n}.{i}", source="s3://b/p"))
"""


def test_several_processes_write_at_once(tmp_path):
    processes, per = 4, 200
    for n in range(processes):
        for i in range(per):
            write(tmp_path, f"p{n}/{i}")
    start = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path), str(n), str(start)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    time.sleep(0.5)  # let them all start, so that they create the schema at the same moment
    start.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    with Manifest(tmp_path) as m:
        keys = {k for k, _ in m.records()}
        assert keys == {f"p{n}/{i}" for n in range(processes) for i in range(per)}
        assert m.get("p3/199") == ObjectAttrs(version="3.199", source="s3://b/p")
    with sqlite3.connect(tmp_path / Manifest.FILENAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_aistore_version_and_checksum():
    md5 = "9e107d9d372bb6826bd81d3542a419d6"
    whole = attrs_from_headers(
        "ais://h:8080/b/o",
        {
            "Content-Length": "43",
            "ais-version": "3",
            "ais-checksum-type": "md5",
            "ais-checksum-value": md5,
        },
    )
    assert (whole.version, whole.md5, whole.size) == ("3", md5, 43)
    ranged = attrs_from_headers(
        "ais://h:8080/b/o",
        {"Content-Range": "bytes 0-9/43", "ais-checksum-type": "md5", "ais-checksum-value": md5},
    )
    assert ranged.md5 is None and ranged.size == 43  # a range's checksum is not the object's
    xx = attrs_from_headers(
        "ais://h:8080/b/o", {"ais-checksum-type": "xxhash", "ais-checksum-value": "ab" * 8}
    )
    assert (xx.md5, xx.crc32c, xx.sha256) == (None, None, None)

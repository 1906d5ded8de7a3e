"""Tests for dlutils.checksums: parsing specs, crc32c, hashers, file digests, base64 digests."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dlutils
from dlutils.checksums import (
    ALGORITHMS,
    Checksum,
    _crc32c_python,
    _fast_crc32c,
    b64_to_hex,
    crc32c,
    file_digest,
    new_hasher,
    parse_checksum,
)

EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SHA1 = "a9993e364706816aba3e25717850c26c9cd0d89d"  # sha1(b"abc")
SHA512 = hashlib.sha512(b"abc").hexdigest()

# ---------------------------------------------------------------------------------------------
# parse_checksum
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (f"sha256:{EMPTY_SHA256}", Checksum("sha256", EMPTY_SHA256)),
        (f"SHA256:{EMPTY_SHA256.upper()}", Checksum("sha256", EMPTY_SHA256)),
        (f"sha-256:{EMPTY_SHA256}", Checksum("sha256", EMPTY_SHA256)),
        (f"SHA-256:{EMPTY_SHA256}", Checksum("sha256", EMPTY_SHA256)),
        (f"MD5:{EMPTY_MD5.upper()}", Checksum("md5", EMPTY_MD5)),
        (f"  md5:{EMPTY_MD5}\n", Checksum("md5", EMPTY_MD5)),
        (f"sha1:{SHA1}", Checksum("sha1", SHA1)),
        (f"sha-1:{SHA1}", Checksum("sha1", SHA1)),
        (f"sha512:{SHA512}", Checksum("sha512", SHA512)),
        ("crc32c:E3069283", Checksum("crc32c", "e3069283")),
        ("crc-32c:e3069283", Checksum("crc32c", "e3069283")),
    ],
)
def test_parse_checksum_valid_forms(spec, expected):
    assert parse_checksum(spec) == expected


def test_parse_checksum_passes_none_and_checksum_through():
    given_checksum = Checksum("md5", EMPTY_MD5)
    assert parse_checksum(None) is None
    assert parse_checksum(given_checksum) is given_checksum
    assert parse_checksum(str(given_checksum)) == given_checksum
    assert str(given_checksum) == f"md5:{EMPTY_MD5}"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "expected '<algorithm>:<hex digest>'"),
        (EMPTY_SHA256, "expected '<algorithm>:<hex digest>'"),
        ("sha256", "expected '<algorithm>:<hex digest>'"),
        (f":{EMPTY_MD5}", "algorithm among md5, sha1, sha256, sha512, crc32c"),
        (f"sha3:{EMPTY_SHA256}", "algorithm among"),
        (f"sha_256:{EMPTY_SHA256}", "algorithm among"),
        (f"md5 :{EMPTY_MD5}", "algorithm among"),
        (f"sha256={EMPTY_SHA256}", "expected '<algorithm>:<hex digest>'"),
        ("sha256:", "sha256 needs 64 hex digits, got ''"),
        ("sha256:xyz", "sha256 needs 64 hex digits, got 'xyz'"),
        (f"sha256:{EMPTY_SHA256[:-1]}", "sha256 needs 64 hex digits"),
        (f"sha256:{EMPTY_SHA256}0", "sha256 needs 64 hex digits"),
        (f"md5:{'g' * 32}", "md5 needs 32 hex digits"),
        (f"md5: {EMPTY_MD5[1:]}", "md5 needs 32 hex digits"),
        (f"md5:0x{EMPTY_MD5[2:]}", "md5 needs 32 hex digits"),
        (f"md5:{EMPTY_MD5[:16]} {EMPTY_MD5[17:]}", "md5 needs 32 hex digits"),
        ("crc32c:123456789", "crc32c needs 8 hex digits"),
        ("crc32c:4waSgw==", "crc32c needs 8 hex digits"),
        (12345, "expected a string"),
        (f"md5:{EMPTY_MD5}".encode(), "expected a string"),
    ],
)
def test_parse_checksum_invalid_forms_name_the_value(spec, match):
    with pytest.raises(dlutils.InvalidInputError, match=re.escape(match)) as info:
        parse_checksum(spec)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"checksum {spec!r} is not valid")


# ---------------------------------------------------------------------------------------------
# crc32c
# ---------------------------------------------------------------------------------------------

CRC32C_VECTORS = [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),  # RFC 3720 B.4
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


@pytest.mark.parametrize(("data", "expected"), CRC32C_VECTORS)
def test_crc32c_known_vectors(data, expected):
    assert crc32c(data) == expected
    assert _crc32c_python(data) == expected


@pytest.mark.parametrize(("data", "expected"), CRC32C_VECTORS)
def test_crc32c_hasher_without_fast_backend(monkeypatch, data, expected):
    monkeypatch.setattr("dlutils.checksums._fast_crc32c", lambda: None)
    hasher = new_hasher("crc32c")
    hasher.update(data)
    assert hasher.hexdigest() == f"{expected:08x}"
    assert crc32c(data) == expected


@given(st.binary(max_size=300), st.data())
def test_crc32c_incremental_equals_one_shot(data, draw):
    cut = draw.draw(st.integers(0, len(data)))
    assert crc32c(data[cut:], crc32c(data[:cut])) == crc32c(data)
    hasher = new_hasher("crc32c")
    hasher.update(data[:cut])
    hasher.update(data[cut:])
    assert hasher.hexdigest() == f"{crc32c(data):08x}"


@pytest.mark.skipif(_fast_crc32c() is None, reason="no google_crc32c / crc32c installed")
@given(st.binary(max_size=2000), st.integers(0, 2**32 - 1))
def test_crc32c_pure_python_equals_fast_path(data, start):
    assert _crc32c_python(data, start) == _fast_crc32c()(data, start)


# ---------------------------------------------------------------------------------------------
# new_hasher, file_digest, b64_to_hex
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(set(ALGORITHMS) - {"crc32c"}))
@pytest.mark.parametrize("data", [b"", b"abc", bytes(range(256)) * 40])
def test_new_hasher_matches_hashlib(algorithm, data):
    hasher = new_hasher(algorithm)
    hasher.update(data[:100])
    hasher.update(data[100:])
    assert hasher.hexdigest() == hashlib.new(algorithm, data).hexdigest()
    assert len(hasher.hexdigest()) == ALGORITHMS[algorithm]


def test_new_hasher_crc32c_digest_width():
    hasher = new_hasher("crc32c")
    assert hasher.hexdigest() == "00000000"
    hasher.update(b"123456789")
    assert hasher.hexdigest() == "e3069283"


@pytest.mark.parametrize("algorithm", ["sha3_256", "SHA256", "sha-256", ""])
def test_new_hasher_rejects_unknown_algorithms(algorithm):
    with pytest.raises(dlutils.InvalidInputError, match=rf"algorithm {re.escape(repr(algorithm))}"):
        new_hasher(algorithm)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@pytest.mark.parametrize("block_size", [1, 7, 1 << 20])
def test_file_digest(tmp_path, random_bytes, algorithm, block_size):
    data = random_bytes(5000, seed=3)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    hasher = new_hasher(algorithm)
    hasher.update(data)
    assert file_digest(path, algorithm, block_size=block_size) == hasher.hexdigest()
    assert file_digest(str(path), algorithm, block_size=block_size) == hasher.hexdigest()


def test_file_digest_of_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert file_digest(path, "md5") == EMPTY_MD5
    assert file_digest(path, "crc32c") == "00000000"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("nhB9nTcrtoJr2B01QqQZ1g==", "9e107d9d372bb6826bd81d3542a419d6"),
        (" 4waSgw==\n", "e3069283"),
        ("1B2M2Y8AsgTpgAmY7PhCfg==", EMPTY_MD5),
        ("not base64!", None),
        ("4waSgw=", None),
        ("4wa$gw==", None),
    ],
)
def test_b64_to_hex(value, expected):
    assert b64_to_hex(value) == expected

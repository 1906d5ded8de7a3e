"""Pytest fixtures for the S3 tests: moto's real server on 127.0.0.1 and a fresh bucket per test.

Import them where they are used, by their function names (so that the fixture arguments
do not shadow imports): ``from servers_s3 import moto_server_fixture, s3_fixture  # noqa: F401``.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

#: The fake profile written to the credentials file the server fixture points boto3 at.
TEST_PROFILE = "dlutils-test"

_names = itertools.count()


@dataclass
class MotoServer:
    """The running server: its URL and the folder holding its fake AWS config files."""

    url: str
    config_dir: str


@pytest.fixture(name="moto_server", scope="session")
def moto_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's ``ThreadedMotoServer`` on 127.0.0.1 and a free port, for the whole session.

    boto3 reaches it through ``AWS_ENDPOINT_URL`` with fake credentials; the user's own
    ``~/.aws`` files are replaced by files holding only fake keys (a default profile and
    :data:`TEST_PROFILE`). Every variable is restored at teardown.
    """
    moto_server_module = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    folder = tmp_path_factory.mktemp("aws")
    credentials = folder / "credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
        f"[{TEST_PROFILE}]\naws_access_key_id = profiled\naws_secret_access_key = profiled\n"
    )
    (folder / "config").write_text(f"[default]\nregion = us-east-1\n[profile {TEST_PROFILE}]\n")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("AWS_"):
                mp.delenv(name)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", url)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
        mp.setenv("AWS_CONFIG_FILE", str(folder / "config"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask for an instance role
        try:
            yield MotoServer(url, str(folder))
        finally:
            server.stop()


class Bucket:
    """A bucket on the moto server with a signed client and a few helpers."""

    def __init__(self, client: Any, name: str):
        self.client = client
        self.name = name

    def uri(self, key: str = "") -> str:
        return f"s3://{self.name}/{key}"

    def put(self, key: str, data: bytes) -> dict[str, Any]:
        """Store ``data`` under ``key``; returns put_object's answer (ETag, VersionId)."""
        return self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def put_many(self, items: dict[str, bytes], workers: int = 8) -> None:
        """Store many small objects at once (moto serves a few hundred a second)."""
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda kv: self.put(*kv), items.items()))

    def enable_versioning(self) -> None:
        self.client.put_bucket_versioning(
            Bucket=self.name, VersioningConfiguration={"Status": "Enabled"}
        )


def _new_bucket(server: MotoServer) -> Bucket:
    boto3 = pytest.importorskip("boto3")
    client = boto3.session.Session().client("s3", endpoint_url=server.url)
    name = f"dlutils-test-{os.getpid()}-{next(_names)}"
    client.create_bucket(Bucket=name)
    return Bucket(client, name)


@pytest.fixture(name="s3")
def s3_fixture(moto_server: MotoServer) -> Bucket:
    """A new, empty bucket on the session's moto server."""
    return _new_bucket(moto_server)


@pytest.fixture(name="s3_module", scope="module")
def s3_module_fixture(moto_server: MotoServer) -> Bucket:
    """A bucket shared by one test module, for data that is slow to create."""
    return _new_bucket(moto_server)

"""The scenarios: what data each one generates, where it is served, which tools fetch it,
and how a tool's output is checked (every file's size and sha256) before its time counts."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from . import tools as t
from .servers import Moto, Nginx

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

#: Sizes of a full run and of a --quick (smoke) run.
SIZES = {
    False: dict(files=2000, file=64 * KiB, T=256 * MiB, L=GiB, S3l=256 * MiB, M=200_000),
    True: dict(files=200, file=64 * KiB, T=64 * MiB, L=128 * MiB, S3l=64 * MiB, M=20_000),
}

Expected = dict[str, tuple[int, str]]  # name -> (size, sha256)


class Env:
    """The run's working folder and servers, each started the first time it is needed."""

    def __init__(self, root: str, quick: bool) -> None:
        self.root, self.quick, self.sizes = root, quick, SIZES[quick]
        self.www = os.path.join(root, "www")
        self.stack = contextlib.ExitStack()
        self._nginx: Nginx | None = None
        self._moto: Moto | None = None

    @property
    def nginx(self) -> Nginx:
        if self._nginx is None:
            os.makedirs(self.www, exist_ok=True)
            self._nginx = self.stack.enter_context(Nginx(self.www))
        return self._nginx

    @property
    def moto(self) -> Moto:
        if self._moto is None:
            self._moto = self.stack.enter_context(Moto())
            self._moto.client().create_bucket(Bucket="bench")
        return self._moto

    def case(self, **fields: Any) -> t.Case:
        return t.Case(dest=os.path.join(self.root, "out", "dest"), **fields)

    def close(self) -> None:
        self.stack.close()


def random_file(path: str, size: int) -> tuple[int, str]:
    """Write ``size`` random bytes to ``path``; return its size and sha256."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for start in range(0, size, 8 * MiB):
            block = os.urandom(min(8 * MiB, size - start))
            digest.update(block)
            f.write(block)
    return size, digest.hexdigest()


def many_files(folder: str, count: int, size: int) -> Expected:
    names = [f"f-{i:04d}.bin" for i in range(count)]
    return {name: random_file(os.path.join(folder, name), size) for name in names}


def verify(dest: str, expected: Expected) -> str | None:
    """``None`` when ``dest`` holds every expected file with its size and sha256."""
    wrong = []
    for name, (size, sha256) in expected.items():
        path = os.path.join(dest, name)
        if not os.path.isfile(path) or os.path.getsize(path) != size:
            wrong.append(name)
        elif sha256 is not None:
            with open(path, "rb") as f:
                if hashlib.file_digest(f, "sha256").hexdigest() != sha256:
                    wrong.append(name)
        if len(wrong) >= 3:
            break
    return f"wrong or missing output: {', '.join(wrong)}" if wrong else None


# -- the scenarios ----------------------------------------------------------------------


def prepare_s(env: Env) -> tuple[t.Case, Expected]:
    n, url = env.sizes["files"], env.nginx.url
    expected = many_files(os.path.join(env.www, "s"), n, env.sizes["file"])
    url_list = os.path.join(env.root, "s-urls.txt")
    with open(url_list, "w", encoding="utf-8") as f:
        f.writelines(f"{url}/s/{name}\n" for name in expected)
    last = f"{n - 1:04d}"
    case = env.case(
        template=f"{url}/s/f-{{0000..{last}}}.bin",
        curl_glob=f"{url}/s/f-[0000-{last}].bin",
        url_list=url_list,
    )
    return case, expected


def prepare_big(which: str, limited: bool) -> Callable[[Env], tuple[t.Case, Expected]]:
    def prepare(env: Env) -> tuple[t.Case, Expected]:
        src = os.path.join(env.www, which.lower(), "big.bin")
        expected = {"big.bin": random_file(src, env.sizes[which])}
        base = env.nginx.limited_url if limited else env.nginx.url
        return env.case(url=f"{base}/{which.lower()}/big.bin", src=src), expected

    return prepare


def prepare_s3s(env: Env) -> tuple[t.Case, Expected]:
    client, n, size = env.moto.client(), env.sizes["files"], env.sizes["file"]
    data = os.urandom(size)  # one body for every object: uploading, not generating, costs

    def put(i: int) -> None:
        client.put_object(Bucket="bench", Key=f"s3s/f-{i:04d}.bin", Body=data)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(n)))
    digest = hashlib.sha256(data).hexdigest()
    expected = {f"f-{i:04d}.bin": (size, digest) for i in range(n)}
    return env.case(s3="s3://bench/s3s/", env=env.moto.env), expected


def prepare_s3l(env: Env) -> tuple[t.Case, Expected]:
    src = os.path.join(env.root, "s3l", "big.bin")
    expected = {"big.bin": random_file(src, env.sizes["S3l"])}
    env.moto.client().upload_file(src, "bench", "s3l/big.bin")
    os.remove(src)
    return env.case(s3="s3://bench/s3l/big.bin", env=env.moto.env), expected


def prepare_m(env: Env) -> tuple[t.Case, Expected]:
    n = env.sizes["M"]
    one = (1, hashlib.sha256(b"x").hexdigest())
    case = env.case(template=f"{env.nginx.url}/tiny/n-{{000000..{n - 1:06d}}}.bin")
    return case, {f"n-{i:06d}.bin": one for i in range(n)}


@dataclass
class Scenario:
    id: str
    title: str
    reference: str  # the tool ratios are taken against
    tools: list[t.Tool]
    prepare: Callable[[Env], tuple[t.Case, Expected]]
    needs: tuple[str, ...] = ("nginx",)


def scenarios(quick: bool) -> dict[str, Scenario]:
    z = SIZES[quick]
    files = f"{z['files']:,} files of {z['file'] // KiB} KiB"
    mib = lambda key: f"{z[key] // MiB:,} MiB"  # noqa: E731
    return {
        "S": Scenario(
            "S", f"{files} from nginx (a range job)", "curl --parallel",
            [t.dlutils_job("dlutils range job"), t.curl_parallel(), t.fsspec_get(), t.wget_list(),
             t.aria2_list(), t.pooch_loop()],
            prepare_s,
        ),
        "T": Scenario(
            "T", f"One {mib('T')} file from nginx at 25 MB/s per connection", "aria2c -x16 -s16",
            [t.dlutils_http("dlutils segmented"), t.aria2_split(), t.curl_one()],
            prepare_big("T", limited=True),
        ),
        "L": Scenario(
            "L", f"One {mib('L')} file from nginx, no limit (cp: the disk's own limit)", "curl",
            [t.dlutils_http("dlutils http_download"), t.curl_one(), t.cp()],
            prepare_big("L", limited=False),
        ),
        "S3s": Scenario(
            "S3s", f"{files.replace('files', 'objects')} from moto's server", "s5cmd cp",
            [t.dlutils_job("dlutils backend job", s3=True), t.s5cmd(), t.boto3_pool()],
            prepare_s3s, ("moto", "flask", "boto3"),
        ),
        "S3l": Scenario(
            "S3l", f"One {mib('S3l')} object from moto's server", "s5cmd cp",
            [t.dlutils_s3(), t.s5cmd(), t.boto3_pool()],
            prepare_s3l, ("moto", "flask", "boto3"),
        ),
    }  # fmt: skip


def memory_job(quick: bool) -> Scenario:
    """M's second half: one dlutils range job of 200,000 names, each a 1-byte body."""
    n = SIZES[quick]["M"]
    return Scenario(
        "M", f"dlutils range job of {n:,} names (nginx answers each with a 1-byte body)", "",
        [t.dlutils_job("dlutils range job")], prepare_m,
    )  # fmt: skip

"""The servers a benchmark run starts for itself on 127.0.0.1: nginx (Debian's) for HTTP,
moto's server for S3. Each is a context manager that stops what it started."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

#: nginx's configuration: one server block as fast as nginx goes, one capped per connection
#: (``limit_rate``), and a ``/tiny/`` location answering any name with a 1-byte body, so a
#: job of 200,000 names needs no 200,000 files on the server's disk.
NGINX_CONF = """\
{user}worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /tiny/ {{ return 200 "x"; }}
    }}
    server {{
        listen 127.0.0.1:{limited_port};
        root {root};
        limit_rate {limit_rate};
    }}
}}
"""


def free_port() -> int:
    """A TCP port nobody listens on at the moment of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    """Return once ``port`` accepts connections; raise if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Nginx:
    """nginx serving ``root`` at :attr:`url` and, at ``limit_rate`` per connection, at
    :attr:`limited_url`.

    Run as root, nginx's workers could not read a 0700 folder: the configuration then
    says ``user root;``.
    """

    def __init__(self, root: str, limit_rate: str = "25m") -> None:
        self.root = os.path.abspath(root)
        self.limit_rate = limit_rate
        self.process: subprocess.Popen | None = None
        self.prefix = ""

    def __enter__(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise RuntimeError("nginx is not installed (apt-get install nginx)")
        self.prefix = tempfile.mkdtemp(prefix="dlutils-bench-nginx-")
        self.port, self.limited_port = free_port(), free_port()
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(
                NGINX_CONF.format(
                    user=user,
                    prefix=self.prefix,
                    port=self.port,
                    limited_port=self.limited_port,
                    root=self.root,
                    limit_rate=self.limit_rate,
                )
            )
        self.process = subprocess.Popen(
            [binary, "-p", self.prefix, "-c", conf, "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.prefix, "stderr.log"), "wb"),  # noqa: SIM115
        )
        try:
            wait_for_port(self.port, self.process, "nginx")
            wait_for_port(self.limited_port, self.process, "nginx")
        except RuntimeError:
            self.__exit__()
            raise
        self.url = f"http://127.0.0.1:{self.port}"
        self.limited_url = f"http://127.0.0.1:{self.limited_port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None:
            stop(self.process)
        shutil.rmtree(self.prefix, ignore_errors=True)


class Moto:
    """moto's S3 server in a process of its own (it is pure Python: sharing the GIL of the
    process that times the runs would slow both), at :attr:`url`; :attr:`env` holds the
    variables a client needs to reach it."""

    def __enter__(self) -> Moto:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port, self.process, "moto's server")
        except RuntimeError:
            stop(self.process)
            raise
        return self

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def __exit__(self, *exc: Any) -> None:
        stop(self.process)

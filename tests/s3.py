"""A real S3-compatible HTTP server for tests: moto in server mode, a subprocess of its own.

Started once per test process on a free loopback port and stopped by its pid. Tests get the
endpoint, the environment that points obstore (and the worker subprocesses) at it, and a
fresh bucket each.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tether.core.devserver import free_port
from tether.testing._workers import stop_process_group


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    pid: int

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server (and nothing else) as S3."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "tether-test",
            "AWS_SECRET_ACCESS_KEY": "tether-test-secret",
            "AWS_REGION": "us-east-1",
            # Never ask a cloud instance-metadata service for credentials: a closed local port.
            "AWS_METADATA_ENDPOINT": "http://127.0.0.1:9",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def create_bucket(self, name: str | None = None) -> str:
        """A new, empty bucket (moto accepts unsigned requests)."""
        bucket = name or f"tether-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(f"{self.endpoint}/{bucket}", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200, response.status
        return bucket


def _start(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    for _ in range(5):
        port = free_port()
        out = log.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    return proc, endpoint
            except OSError:
                time.sleep(0.2)
        stop_process_group(proc)  # the port was taken meanwhile, or the server is slow: try another
    raise RuntimeError(f"moto server did not start; log:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc, endpoint = _start(log)
    try:
        yield S3Server(endpoint=endpoint, pid=proc.pid)
    finally:
        stop_process_group(proc)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This test process points at the server too (obstore reads the environment)."""
    env = s3_server.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env

"""Fixtures for the provider tests: a real moto EC2 server on 127.0.0.1 and a loopback-only network.

Nothing here may ever reach a real AWS endpoint: credentials are fake, the endpoint is the local
moto server, instance metadata lookups are disabled, and every socket connect to a non-loopback
address fails the test.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.providers.helpers import REGION, Kprov, moto_post

#: Networks of hosts a test itself created (network namespaces); the only non-loopback targets allowed.
LAB_NETWORKS: list[ipaddress.IPv4Network] = []


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _allowed(host: str) -> bool:
    if _is_loopback(host):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ip in net for net in LAB_NETWORKS)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt of a provider test to connect anywhere but loopback or its own lab hosts."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _allowed(str(address[0])):
            raise AssertionError(f"network rule: test tried to connect to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server (all AWS services, EC2 included) on 127.0.0.1, for the whole session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request is noise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Fresh moto state + an environment whose only AWS endpoint is the local moto server."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.delenv("KPROV_EC2_SSH_CIDR", raising=False)
    if not _is_loopback(urlparse(os.environ["AWS_ENDPOINT_URL"]).hostname or ""):
        pytest.fail("refusing to run: AWS_ENDPOINT_URL is not a loopback address")
    moto_post(moto_endpoint, "/moto-api/reset")
    return moto_endpoint


@pytest.fixture
def ec2(aws: str) -> Any:
    """A boto3 EC2 client on the moto server, to look at what kprov did."""
    import boto3

    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def kprov(capsys: pytest.CaptureFixture[str]) -> Kprov:
    return Kprov(capsys)

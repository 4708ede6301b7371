"""Certificate facts: kubeadm's check-expiration table and the kubelet rotation probe (pure parsers)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from provisioner.actions.certs import Cert, CertsReport, KubeletRotation, parse_check_expiration, parse_kubelet_rotation

DATA = Path(__file__).parent / "data"
LEAVES = [
    "admin.conf",
    "apiserver",
    "apiserver-etcd-client",
    "apiserver-kubelet-client",
    "controller-manager.conf",
    "etcd-healthcheck-client",
    "etcd-peer",
    "etcd-server",
    "front-proxy-client",
    "scheduler.conf",
]


def test_every_certificate_of_kubeadm_1_20() -> None:
    certs = parse_check_expiration("cp1", (DATA / "check-expiration-1.20.txt").read_text())
    assert [c.name for c in certs if not c.is_ca] == LEAVES
    assert [c.name for c in certs if c.is_ca] == ["ca", "etcd-ca", "front-proxy-ca"]
    by_name = {c.name: c for c in certs}
    assert by_name["apiserver"].authority == "ca" and by_name["etcd-peer"].authority == "etcd-ca"
    assert by_name["admin.conf"].authority == "" and not by_name["admin.conf"].externally_managed
    assert by_name["apiserver"].expires == datetime(2027, 12, 1, 7, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    "now,warn_days,expiring",
    [
        (datetime(2026, 12, 1, 7, 0, tzinfo=UTC), 30, 0),
        (datetime(2027, 11, 5, 7, 0, tzinfo=UTC), 30, 10),  # 26 days left: every leaf certificate
        (datetime(2027, 11, 5, 7, 0, tzinfo=UTC), 20, 0),
        (datetime(2027, 12, 2, 7, 0, tzinfo=UTC), 0, 10),  # already expired
    ],
)
def test_expiring_within_warn_days(now: datetime, warn_days: int, expiring: int) -> None:
    certs = parse_check_expiration("cp1", (DATA / "check-expiration-1.20.txt").read_text())
    report = CertsReport(tuple(certs), (KubeletRotation("cp1", True),), warn_days, now)
    assert len(report.expiring) == expiring and report.ok is (expiring == 0)
    assert report.nearest is not None and report.nearest.name == "admin.conf"


@pytest.mark.parametrize(
    "out,rotate,client",
    [
        (
            "rotate true\nclient /var/lib/kubelet/pki/kubelet-client-2026-12-01-07-12-40.pem\n",
            True,
            "/var/lib/kubelet/pki/kubelet-client-2026-12-01-07-12-40.pem",
        ),
        ("rotate false\n", False, ""),
        ("rotate none\n", None, ""),
    ],
)
def test_kubelet_rotation(out: str, rotate: bool | None, client: str) -> None:
    assert parse_kubelet_rotation("w1", out) == KubeletRotation("w1", rotate, client)


def test_rotation_off_fails_the_check() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    cert = Cert("cp1", "apiserver", datetime(2027, 12, 1, tzinfo=UTC), "ca")
    report = CertsReport((cert,), (KubeletRotation("cp1", True), KubeletRotation("w1", False)), 30, now)
    assert report.rotation_off == ("w1",) and not report.ok

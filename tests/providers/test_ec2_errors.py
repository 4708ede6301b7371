"""Every AWS failure is one readable line + hint from the real CLI, never a botocore traceback.

Each error is produced for real by the moto server (or by botocore's credential chain), not stubbed.
"""

from __future__ import annotations

import json
import socket

import boto3
import pytest

from provisioner.errors import CloudError
from provisioner.providers.ec2_aws import aws_errors
from tests.providers.helpers import REGION, cluster_state, ec2_inventory, moto_post


def assert_one_line_error(rc: int, err: str, expected_rc: int, *fragments: str) -> str:
    assert rc == expected_rc, err
    assert "Traceback" not in err and "botocore" not in err
    lines = [line for line in err.splitlines() if line.startswith(("error:", "hint:", "  |"))]
    error_lines = [line for line in lines if line.startswith("error:")]
    assert len(error_lines) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert any(line.startswith("hint: ") for line in lines), err
    return error_lines[0]


def test_no_credentials(kprov, aws, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    rc, _, err = kprov("ec2", "create", "-i", ec2_inventory(tmp_path), "--no-wait-ssh")
    assert_one_line_error(rc, err, 1, "no usable AWS credentials found", "AWS_PROFILE")


def test_unknown_profile(kprov, aws, tmp_path):
    rc, _, err = kprov("ec2", "inventory", "-i", ec2_inventory(tmp_path, profile="nosuchprofile"))
    assert_one_line_error(rc, err, 1, "nosuchprofile", "ec2.profile")


def test_rejected_credentials(kprov, aws, tmp_path, monkeypatch):
    """Unknown access keys with moto's IAM enforcement on: AWS's AuthFailure."""
    moto_post(aws, "/moto-api/reset-auth", b"0")
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKEFAKE")
        rc, _, err = kprov("ec2", "create", "-i", ec2_inventory(tmp_path), "--no-wait-ssh")
    finally:
        moto_post(aws, "/moto-api/reset-auth", b"inf")
    assert_one_line_error(rc, err, 1, "AuthFailure", "configure AWS credentials")


def test_unauthorized_operation(kprov, aws, tmp_path, monkeypatch):
    """A real IAM user that may only describe: RunInstances is denied by moto's policy engine."""
    moto_post(aws, "/moto-api/reset-auth", b"3")  # the 3 IAM calls below run before enforcement
    try:
        iam = boto3.client("iam", region_name=REGION)
        iam.create_user(UserName="readonly")
        iam.put_user_policy(
            UserName="readonly",
            PolicyName="describe-only",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": [
                                "ec2:Describe*",
                                "ec2:CreateSecurityGroup",
                                "ec2:AuthorizeSecurityGroupIngress",
                                "ec2:ImportKeyPair",
                                "ec2:CreateTags",
                            ],
                            "Resource": "*",
                        }
                    ],
                }
            ),
        )
        key = iam.create_access_key(UserName="readonly")["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        rc, _, err = kprov("ec2", "create", "-i", ec2_inventory(tmp_path, "denied"), "--no-wait-ssh")
    finally:
        moto_post(aws, "/moto-api/reset-auth", b"inf")
    line = assert_one_line_error(
        rc,
        err,
        1,
        "cannot launch denied-cp-1: AccessDenied",
        "not authorized to perform: ec2:RunInstances",
        "docs/ec2.md lists the IAM actions",
    )
    assert key["SecretAccessKey"] not in err and key["AccessKeyId"] not in line


@pytest.mark.parametrize(
    "ami, fragment",
    [
        ("ami-0123456789abcdef0", "InvalidAMIID.NotFound"),
        (
            {"owner": "099720109477", "name": "no-such-image-*"},
            "no x86_64 AMI named 'no-such-image-*' owned by 099720109477",
        ),
    ],
)
def test_bad_ami(kprov, ec2, tmp_path, ami, fragment):
    rc, _, err = kprov("ec2", "create", "-i", ec2_inventory(tmp_path, "badami", ami=ami), "--no-wait-ssh")
    assert_one_line_error(rc, err, 1, fragment, "ec2.ami")
    assert cluster_state(ec2, "badami")["groups"] == []  # failed before creating anything


def test_quota_exceeded(kprov, ec2, tmp_path):
    """31 SSH CIDRs need 62 rules: over the real 60-rules-per-group quota moto enforces."""
    cidrs = [f"198.51.100.{i}/32" for i in range(31)]
    rc, _, err = kprov("ec2", "create", "-i", ec2_inventory(tmp_path, "quota", ssh_cidr=cidrs), "--no-wait-ssh")
    assert_one_line_error(rc, err, 1, "RulesPerSecurityGroupLimitExceeded", "service quota")
    assert "created before the failure: security group sg-" in err


def test_invalid_parameter_rejected_by_aws(kprov, ec2, tmp_path, monkeypatch):
    import moto.settings

    monkeypatch.setattr(moto.settings, "EC2_ENABLE_INSTANCE_TYPE_VALIDATION", True)
    inv = ec2_inventory(tmp_path, "itype", control_plane={"count": 1, "instance_type": "t3.galactic"})
    rc, _, err = kprov("ec2", "create", "-i", inv, "--no-wait-ssh", "--poll", "0.1")
    assert_one_line_error(rc, err, 1, "cannot launch itype-cp-1: InvalidInstanceType", "instance_type")


def test_endpoint_unreachable(kprov, aws, tmp_path, monkeypatch):
    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    rc, _, err = kprov("ec2", "inventory", "-i", ec2_inventory(tmp_path))
    assert_one_line_error(rc, err, 1, "EC2 endpoint unreachable", "AWS_ENDPOINT_URL")


def test_no_region(kprov, aws, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    rc, _, err = kprov("ec2", "inventory", "-i", ec2_inventory(tmp_path, region=None))
    assert_one_line_error(rc, err, 1, "no AWS region configured", "ec2.region")


def test_missing_public_key_file(kprov, ec2, tmp_path):
    rc, _, err = kprov(
        "ec2", "create", "-i", ec2_inventory(tmp_path, "nokey", public_key="missing.pub"), "--no-wait-ssh"
    )
    assert_one_line_error(rc, err, 2, "ec2.public_key: cannot read", "ssh-keygen")


def test_key_pair_absent_and_no_public_key(kprov, ec2, tmp_path):
    rc, _, err = kprov("ec2", "create", "-i", ec2_inventory(tmp_path, "nopub", public_key=None), "--no-wait-ssh")
    assert_one_line_error(rc, err, 1, "key pair 'kprov-nopub' does not exist", "set ec2.public_key")


def test_traceback_flag_is_for_developers_only(kprov, ec2, tmp_path):
    rc, _, err = kprov(
        "--traceback", "ec2", "create", "-i", ec2_inventory(tmp_path, ami="ami-0123456789abcdef0"), "--no-wait-ssh"
    )
    assert rc == 1 and "Traceback" in err and "CloudError" in err


@pytest.mark.parametrize(
    "code, hint_fragment",
    [
        ("InstanceLimitExceeded", "service quota"),
        ("VcpuLimitExceeded", "service quota"),
        ("UnauthorizedOperation", "IAM actions"),
        ("InsufficientInstanceCapacity", "no capacity"),
        ("OptInRequired", "Marketplace"),
        ("SomethingNew", None),
    ],
)
def test_error_codes_map_to_hints(code, hint_fragment):
    """Codes moto cannot produce: the same translation path, fed a ClientError built like botocore's."""
    from botocore.exceptions import ClientError

    with pytest.raises(CloudError) as info, aws_errors("launch x-cp-1"):
        raise ClientError({"Error": {"Code": code, "Message": "multi\nline   message"}}, "RunInstances")
    assert str(info.value) == f"cannot launch x-cp-1: {code}: multi line message"
    if hint_fragment is None:
        assert info.value.hint is None
    else:
        assert hint_fragment in info.value.hint

"""`kprov ci-smoke`: create -> up -> smoke -> destroy against moto, with the up/smoke steps
substituted by small scripts (exit codes, JSON events and output under the test's control).
The teardown must run on success, on a failing step, on a failing create, and on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner.providers import ci_smoke as pipeline
from tests.providers.helpers import cluster_state, ec2_inventory, moto_post

NOTHING = {"instances": [], "instance_count": 0, "groups": [], "keys": []}

# Stands in for `kprov up`: proves the instances exist while it runs (it resolves them through the
# real provider, against the same moto server), appends engine-style JSON events, exits with argv[3].
FAKE_UP = """
import json, os, sys, time, pathlib
if len(sys.argv) > 4:  # marker file: say "started", then hang until stopped (the interrupt tests)
    pathlib.Path(sys.argv[4]).write_text(str(os.getpid()))
    time.sleep(120)
from provisioner.providers import ec2
from provisioner.providers._common import load_raw_inventory
inventory, events, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
raw = load_raw_inventory(inventory)
hosts = ec2.resolve_hosts(raw["ec2"], raw)
with open(events, "a") as out:
    for h in hosts:
        out.write(json.dumps({"host": h["name"], "role": "prereqs", "task": "swap | off", "status": "changed",
                              "changed": True, "duration_ms": 5, "msg": ""}) + "\\n")
        out.write(json.dumps({"recap": h["name"], "ok": 7, "changed": 3, "failed": rc, "skipped": 1, "unreachable": 0}) + "\\n")
print("RECAP " + " ".join(h["name"] + "=" + h["node_ip"] for h in hosts))
sys.exit(rc)
"""
FAKE_SMOKE = """
import sys, pathlib
pathlib.Path(sys.argv[1]).write_text("ran")
print("node           | NodePort 30080")
print("ci-cp-1        | ok")
sys.exit(int(sys.argv[2]))
"""


@pytest.fixture
def scripts(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "fake_up.py").write_text(FAKE_UP)
    (tmp_path / "fake_smoke.py").write_text(FAKE_SMOKE)
    return {"up": tmp_path / "fake_up.py", "smoke": tmp_path / "fake_smoke.py", "smoked": tmp_path / "smoke-ran"}


def ci_args(
    tmp_path: Path,
    scripts: dict[str, Path],
    inventory: Path,
    *,
    up_rc: int = 0,
    smoke_rc: int = 0,
    hang_marker: Path | None = None,
) -> list[str]:
    py = shlex.quote(sys.executable)
    up = f"{py} {shlex.quote(str(scripts['up']))} {{inventory}} {{events}} {up_rc}"
    if hang_marker is not None:
        up += f" {shlex.quote(str(hang_marker))}"
    smoke = f"{py} {shlex.quote(str(scripts['smoke']))} {shlex.quote(str(scripts['smoked']))} {smoke_rc}"
    return [
        "ci-smoke",
        "--inventory",
        str(inventory),
        "--up-cmd",
        up,
        "--smoke-cmd",
        smoke,
        "--events",
        str(tmp_path / "events.jsonl"),
        "--summary",
        str(tmp_path / "summary.md"),
        "--no-wait-ssh",
        "--poll",
        "0.1",
    ]


def test_success_writes_summary_and_event_log_and_tears_down(kprov, ec2, tmp_path, scripts):
    inv = ec2_inventory(tmp_path, "ci", workers={"count": 1})
    rc, out, err = kprov(*ci_args(tmp_path, scripts, inv))
    assert rc == 0, err
    assert "RECAP ci-cp-1=172.31." in out and "ci-worker-1=172.31." in out  # up saw the instances
    assert scripts["smoked"].exists()
    assert cluster_state(ec2, "ci") == NOTHING

    summary = (tmp_path / "summary.md").read_text()
    for fragment in (
        "## kprov ci-smoke: `ci`",
        "| ec2 create | ✅ ok |",
        "| up | ✅ ok |",
        "| smoke | ✅ ok |",
        "| ec2 destroy | ✅ ok |",
        "| ci-cp-1 | 7 | 3 | 0 | 1 | 0 |",
        "| ci-worker-1 | 7 | 3 | 0 | 1 | 0 |",
        "### Smoke test",
        "ci-cp-1        | ok",
        "### kprov up (last lines)",
    ):
        assert fragment in summary, summary
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["task"] for e in events if e.get("role") == "ci-smoke"] == ["ec2 create", "up", "smoke", "ec2 destroy"]
    assert {e["host"] for e in events if e.get("role") == "prereqs"} == {"ci-cp-1", "ci-worker-1"}


@pytest.mark.parametrize(
    "up_rc, smoke_rc, failed_step, error",
    [
        (1, 0, "up", "error: ci-smoke: step `up` failed (exit 1)"),
        (0, 3, "smoke", "error: ci-smoke: step `smoke` failed (exit 3)"),
    ],
)
def test_a_failing_step_still_tears_down(kprov, ec2, tmp_path, scripts, up_rc, smoke_rc, failed_step, error):
    inv = ec2_inventory(tmp_path, "cifail", workers={"count": 1})
    rc, _, err = kprov(*ci_args(tmp_path, scripts, inv, up_rc=up_rc, smoke_rc=smoke_rc))
    assert rc == 1 and error in err and "Traceback" not in err
    assert cluster_state(ec2, "cifail") == NOTHING
    assert scripts["smoked"].exists() == (failed_step == "smoke")  # smoke never runs after a failed up
    summary = (tmp_path / "summary.md").read_text()
    assert f"| {failed_step} | ❌ failed |" in summary and "| ec2 destroy | ✅ ok |" in summary


def test_a_failing_create_still_tears_down_what_it_made(kprov, ec2, tmp_path, scripts):
    inv = ec2_inventory(tmp_path, "cicreate", ssh_cidr=[f"198.51.100.{i}/32" for i in range(31)])  # SG quota
    rc, _, err = kprov(*ci_args(tmp_path, scripts, inv))
    assert rc == 1 and "RulesPerSecurityGroupLimitExceeded" in err
    assert cluster_state(ec2, "cicreate") == NOTHING
    assert not scripts["smoked"].exists()
    summary = (tmp_path / "summary.md").read_text()
    assert "| ec2 create | ❌ failed |" in summary and "| ec2 destroy | ✅ ok |" in summary


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_during_up_tears_down(ec2, tmp_path, scripts, sig):
    inv = ec2_inventory(tmp_path, "ciint", workers={"count": 1})
    marker = tmp_path / "up-started"
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioner.cli.main", *ci_args(tmp_path, scripts, inv, hang_marker=marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() or not marker.read_text():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the up step never started"
            time.sleep(0.05)
        assert cluster_state(ec2, "ciint")["instance_count"] == 2
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert cluster_state(ec2, "ciint") == NOTHING
    up_pid = int(marker.read_text())
    with pytest.raises(ProcessLookupError):  # the hanging up step was stopped, not orphaned
        for _ in range(50):
            os.kill(up_pid, 0)
            time.sleep(0.1)
    assert "| up | ⚠️ interrupted |" in (tmp_path / "summary.md").read_text()


def test_default_steps_run_kprov_with_this_python():
    up = pipeline.step_argv(None, "up", "/i/inv.yaml", "/o/ev.jsonl")
    assert up == [
        sys.executable,
        "-m",
        "provisioner.cli.main",
        "up",
        "--inventory",
        "/i/inv.yaml",
        "--no-smoke",
        "--accept-new-host-keys",
        "--log-file",
        "/o/ev.jsonl",
    ]
    assert pipeline.step_argv(None, "smoke", "/i/inv.yaml", "/o/ev.jsonl") == [
        sys.executable,
        "-m",
        "provisioner.cli.main",
        "smoke",
        "--inventory",
        "/i/inv.yaml",
    ]
    assert pipeline.step_argv("my-up --inv '{inventory}' --log {events}", "up", "/a b/i.yaml", "/e") == [
        "my-up",
        "--inv",
        "/a b/i.yaml",
        "--log",
        "/e",
    ]


@pytest.mark.parametrize(
    "lines, expected",
    [
        (
            [
                '{"host": "a", "status": "ok"}',
                '{"host": "a", "status": "changed"}',
                '{"host": "b", "status": "failed"}',
                "not json",
                '{"host": null, "status": "ok"}',
                "[1]",
            ],
            {"a": {"ok": 1, "changed": 1}, "b": {"failed": 1}},
        ),
        (
            [
                '{"host": "a", "status": "ok"}',
                '{"recap": "a", "ok": 5, "changed": 2, "failed": 0, "skipped": 0, "unreachable": 0}',
            ],
            {"a": {"ok": 5, "changed": 2, "failed": 0, "skipped": 0, "unreachable": 0}},
        ),
        ([], {}),
    ],
)
def test_recap_from_events(lines, expected):
    assert {r.host: r.counts for r in pipeline.recap_from_events(lines)} == expected


def test_summary_escapes_table_cells():
    text = pipeline.render_summary("c", [pipeline.StepResult("up", "failed", 1.0, "a|b\nc")], [], "", "")
    assert "| up | ❌ failed | 1.0 s | a\\|b c |" in text


def test_unwritable_event_log_is_refused_before_anything_is_created(kprov, ec2, tmp_path, scripts):
    inv = ec2_inventory(tmp_path, "cievents")
    args = ci_args(tmp_path, scripts, inv)
    args[args.index("--events") + 1] = str(tmp_path / "no-such-dir" / "events.jsonl")
    rc, _, err = kprov(*args)
    assert rc == 2 and "error: --events: cannot write" in err
    assert cluster_state(ec2, "cievents") == NOTHING


def test_a_failing_teardown_is_reported_with_what_to_do(kprov, ec2, aws, tmp_path, scripts, monkeypatch):
    """Credentials that may do everything but terminate (a real IAM deny, enforced by moto)."""
    import boto3

    moto_post(aws, "/moto-api/reset-auth", b"3")
    try:
        iam = boto3.client("iam", region_name="eu-west-1")
        iam.create_user(UserName="no-terminate")
        iam.put_user_policy(
            UserName="no-terminate",
            PolicyName="p",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Action": ["ec2:*", "elasticloadbalancing:*"], "Resource": "*"},
                        {"Effect": "Deny", "Action": "ec2:TerminateInstances", "Resource": "*"},
                    ],
                }
            ),
        )
        key = iam.create_access_key(UserName="no-terminate")["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        inv = ec2_inventory(tmp_path, "citear", workers={"count": 0})
        rc, _, err = kprov(*ci_args(tmp_path, scripts, inv, up_rc=1))
        assert rc == 1
        assert "error: ci-smoke: step `up` failed (exit 1)" in err
        assert "and the teardown failed too: cannot terminate the instances: AccessDenied" in err
        assert "| ec2 destroy | ❌ failed |" in (tmp_path / "summary.md").read_text()

        rc, _, err = kprov(*ci_args(tmp_path, scripts, inv))  # the steps pass, the teardown fails: still an error
        assert rc == 1 and "error: cannot terminate the instances: AccessDenied" in err
        assert "then run `kprov ec2 destroy` to remove what is left of cluster citear" in err
    finally:
        moto_post(aws, "/moto-api/reset-auth", b"inf")

"""Refresh the captured fact outputs in captured/ from a real Debian host.

    .venv/bin/python -m tests.facts.capture LAB NODE     # e.g. kpm kpm-1 (a lab made with `kprov lab up`)

Runs the modules' own fact scripts (what the parsers see in a real run) on a lab node, after putting
the node in a few known states (a held package, swap lines in fstab, small/large/empty files). The
node is changed: use a throw-away lab.
"""

from __future__ import annotations

import sys
from pathlib import Path

from provisioner.facts.parsers import dpkg_script, file_state_script
from provisioner.lab import Lab
from provisioner.modules.system import KernelModuleModule, SwapModule, SysctlModule

OUT = Path(__file__).parent / "captured"

SETUP = r"""
set -e
mkdir -p /tmp/facts/dir && cd /tmp/facts
printf 'hello\nworld\n' > small.txt && chmod 640 small.txt
printf 'no newline' > nonl.txt
: > empty.txt
head -c 300000 /dev/zero > large.bin
ln -sfn small.txt link
apt-mark hold openssh-server >/dev/null
echo "openssh-client deinstall" | dpkg --set-selections
grep -q kprov-capture /etc/fstab || printf '%s\n' \
  '/swapfile none swap sw 0 0  # kprov-capture' \
  '  /dev/vdb2   none   swap   defaults 0 0' \
  '# /old-swap none swap sw 0 0' \
  'UUID=abcd / ext4 errors=remount-ro 0 1' >> /etc/fstab
"""

UNDO = r"""
apt-mark unhold openssh-server >/dev/null
echo "openssh-client install" | dpkg --set-selections
sed -i -e '/kprov-capture/,+3d' /etc/fstab
rm -rf /tmp/facts
"""

CASES = {
    "file_small": file_state_script("/tmp/facts/small.txt"),
    "file_nonl": file_state_script("/tmp/facts/nonl.txt"),
    "file_empty": file_state_script("/tmp/facts/empty.txt"),
    "file_large": file_state_script("/tmp/facts/large.bin"),
    "file_dir": file_state_script("/tmp/facts/dir"),
    "file_link": file_state_script("/tmp/facts/link"),
    "file_absent": file_state_script("/tmp/facts/nope"),
    "file_no_content": file_state_script("/tmp/facts/small.txt", with_content=False),
    "dpkg": dpkg_script(["openssh-server", "systemd", "no-such-package-kprov", "libc6"]),
    # names with an architecture, a package dpkg knows but never installed ("un"), one marked for removal ("ri")
    "dpkg_arch": dpkg_script(["libc6:amd64", "openssh-server:amd64"]),
    "dpkg_states": dpkg_script(["nano", "less", "openssh-client"]),
    "systemctl_ssh": "systemctl show -p LoadState,ActiveState,UnitFileState,SubState -- ssh.service",
    "systemctl_static": "systemctl show -p LoadState,ActiveState,UnitFileState,SubState -- systemd-journald.service",
    "systemctl_disabled": "systemctl show -p LoadState,ActiveState,UnitFileState,SubState -- debug-shell.service",
    "systemctl_masked": "systemctl show -p LoadState,ActiveState,UnitFileState,SubState -- sudo.service",
    "systemctl_missing": "systemctl show -p LoadState,ActiveState,UnitFileState,SubState -- no-such-unit.service",
    "sysctl": SysctlModule()
    .facts(
        SysctlModule().validate(
            {"values": {"net.ipv4.ip_forward": 1, "kernel.printk": "4 4 1 7", "net.no.such.key": 1}}, "capture"
        )
    )[1]
    .script,
    "swap": SwapModule().facts({"state": "off"})[0].script,
    "kernel_modules": KernelModuleModule()
    .facts({"names": ["overlay"], "file": "/etc/modules-load.d/kprov.conf"})[1]
    .script,
    "os_release": "cat /etc/os-release",
}


def main(lab_name: str, node: str) -> None:
    lab = Lab(lab_name)
    setup = lab.capture(node, ["sh", "-c", SETUP])
    if setup.returncode != 0:
        raise SystemExit(f"setup failed: {setup.stderr}")
    OUT.mkdir(exist_ok=True)
    try:
        for name, script in CASES.items():
            res = lab.capture(node, ["sh", "-c", script])
            (OUT / f"{name}.out").write_text(res.stdout)
            (OUT / f"{name}.rc").write_text(f"{res.returncode}\n")
            print(f"{name}: rc={res.returncode}, {len(res.stdout)} bytes")
    finally:
        lab.capture(node, ["sh", "-c", UNDO])


if __name__ == "__main__":
    main(*sys.argv[1:3])

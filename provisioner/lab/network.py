"""Lab bridge, subnets and the host-side veths nspawn creates."""

from __future__ import annotations

import ipaddress
import json
import logging
import shlex
import time
from collections.abc import Iterable
from pathlib import Path

from provisioner.errors import InputError
from provisioner.lab.host import run

log = logging.getLogger(__name__)

DEFAULT_POOL = ipaddress.IPv4Network("10.231.0.0/16")
FIRST_NODE_HOST = 11  # node i (1-based) gets <network> + 10 + i; .1 is the bridge


def bridge_name(lab: str) -> str:
    return f"kprov-{lab}"


def veth_name(node: str) -> str:
    # systemd-nspawn names the host side of --network-bridge "vb-<machine>"
    return f"vb-{node}"


def gateway(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return subnet.network_address + 1


def node_address(subnet: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Address:
    return subnet.network_address + FIRST_NODE_HOST - 1 + index


def max_nodes(subnet: ipaddress.IPv4Network) -> int:
    return subnet.num_addresses - FIRST_NODE_HOST - 1


def _ip_json(*args: str) -> list[dict]:
    out = run(["ip", "-j", *args]).stdout.strip()
    return json.loads(out) if out else []


def links() -> dict[str, dict]:
    return {link["ifname"]: link for link in _ip_json("link", "show")}


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def used_networks(ignore_dev: str | None = None) -> list[ipaddress.IPv4Network]:
    """Every IPv4 network already on this machine: addresses and routes (default routes excluded)."""
    nets = []
    for link in _ip_json("-4", "addr", "show"):
        if link.get("ifname") == ignore_dev:
            continue
        for a in link.get("addr_info", []):
            nets.append(ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}").network)
    for r in _ip_json("-4", "route", "show", "table", "all"):
        dst = r.get("dst", "")
        if r.get("dev") == ignore_dev or dst in ("default", "") or r.get("type") in ("broadcast",):
            continue
        try:
            net = ipaddress.IPv4Network(dst, strict=False)
        except ValueError:
            continue
        if net.prefixlen > 0:
            nets.append(net)
    return nets


def overlaps(candidate: ipaddress.IPv4Network, used: Iterable[ipaddress.IPv4Network]) -> ipaddress.IPv4Network | None:
    return next((u for u in used if candidate.overlaps(u)), None)


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise InputError(f"bad --subnet {text!r}: {exc}", hint="give an IPv4 network such as 10.231.7.0/24") from exc
    if not 16 <= net.prefixlen <= 24:
        raise InputError(f"bad --subnet {text}: prefix must be /16 to /24", hint="e.g. 10.231.7.0/24")
    if not net.is_private:
        raise InputError(f"bad --subnet {text}: not a private network", hint="use a private range, e.g. 10.231.7.0/24")
    return net


def pick_subnet(
    taken: Iterable[ipaddress.IPv4Network], pool: ipaddress.IPv4Network = DEFAULT_POOL
) -> ipaddress.IPv4Network:
    """The first /24 of the pool that collides with nothing on the machine nor another lab."""
    used = [*used_networks(), *taken]
    for candidate in pool.subnets(new_prefix=24):
        if overlaps(candidate, used) is None:
            return candidate
    raise InputError(f"no free /24 left in {pool}", hint="pass --subnet with a free private /24")


def check_subnet_free(subnet: ipaddress.IPv4Network, taken: Iterable[ipaddress.IPv4Network], own_bridge: str) -> None:
    clash = overlaps(subnet, [*used_networks(ignore_dev=own_bridge), *taken])
    if clash is not None:
        raise InputError(
            f"subnet {subnet} is in use on this machine (overlaps {clash})",
            hint="pick another --subnet, or leave it out to get a free one",
        )


def ensure_bridge(name: str, subnet: ipaddress.IPv4Network) -> None:
    """Create the bridge with the gateway address (idempotent; repairs a half-made bridge)."""
    addr = f"{gateway(subnet)}/{subnet.prefixlen}"
    if not link_exists(name):
        run(["ip", "link", "add", name, "type", "bridge"])
        log.info("bridge %s created", name)
    # no IPv6 on the lab bridge: nodes are IPv4 only, so keep the link quiet
    v6 = Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
    if v6.exists():  # absent when the host runs without IPv6
        v6.write_text("1")
    have = {
        f"{a['local']}/{a['prefixlen']}"
        for link in _ip_json("-4", "addr", "show", "dev", name)
        for a in link.get("addr_info", [])
    }
    if addr not in have:
        run(["ip", "addr", "add", addr, "dev", name])
    run(["ip", "link", "set", name, "up"])


def delete_link(name: str) -> bool:
    if not link_exists(name):
        return False
    run(["ip", "link", "del", name], check=False)
    return True


def wait_link_gone(name: str, timeout: float = 5.0) -> None:
    """The host veth vanishes only when the node's netns is freed (asynchronously); then force it."""
    deadline = time.monotonic() + timeout
    while link_exists(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    if delete_link(name):
        log.debug("deleted stale veth %s", name)


def lab_links(lab: str) -> list[str]:
    """Host links that belong to the lab: its bridge, its veths, and anything enslaved to the bridge."""
    br = bridge_name(lab)
    prefix = veth_name(f"{lab}-")
    return [n for n, link in links().items() if n == br or n.startswith(prefix) or link.get("master") == br]


# Guard rules: even if the operator turns on ip_forward, nodes must not route out through the host.
def _comment(lab: str) -> str:
    return f"kprov-lab:{lab}"


def _guard_specs(lab: str) -> list[list[str]]:
    br = bridge_name(lab)
    tag = ["-m", "comment", "--comment", _comment(lab), "-j", "DROP"]
    return [["-i", br, "!", "-o", br, *tag], ["!", "-i", br, "-o", br, *tag]]


def ensure_guard_rules(lab: str) -> None:
    for spec in _guard_specs(lab):
        if run(["iptables", "-w", "-C", "FORWARD", *spec], check=False).returncode != 0:
            run(["iptables", "-w", "-I", "FORWARD", *spec])


def rule_comment(line: str) -> str | None:
    """The `--comment` of one `iptables -S` line (unquoted), None if it has none or cannot be parsed."""
    try:
        args = shlex.split(line)
    except ValueError:
        return None
    for i, arg in enumerate(args[:-1]):
        if arg == "--comment":
            return args[i + 1]
    return None


def select_lab_rules(lines: Iterable[str], lab: str) -> list[str]:
    """The lines whose comment is exactly the lab's token: lab `a` never selects lab `ab`'s rules."""
    token = _comment(lab)
    return [line for line in lines if rule_comment(line) == token]


def lab_rules(lab: str) -> list[str]:
    """`iptables -S` lines (any chain of the filter table) that carry the lab's comment."""
    proc = run(["iptables", "-w", "-S"], check=False)
    return select_lab_rules(proc.stdout.splitlines(), lab)


def remove_guard_rules(lab: str) -> None:
    for line in lab_rules(lab):
        args = shlex.split(line)
        if args and args[0] == "-A":
            run(["iptables", "-w", "-D", *args[1:]], check=False)

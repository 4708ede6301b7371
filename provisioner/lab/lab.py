"""The lab: N systemd-nspawn machines on a private bridge, the test bed for kprov."""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import ipaddress
import logging
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import InputError, LabError
from provisioner.lab import cgroups, fsutil, host, keys, mirror, network, proc, proxy, state
from provisioner.lab import image as base_image
from provisioner.lab import inventory as inv
from provisioner.lab import node as nodemod
from provisioner.lab.node import LabNet, NodeSpec
from provisioner.lab.ssh import SshTarget, wait_ready
from provisioner.lab.state import LabPaths, LabState

log = logging.getLogger(__name__)

DEFAULT_NAME = "lab"
DEFAULT_NODES = 3
READY_TIMEOUT = 300.0
DOWN_PROGRAMS = ("ip", "iptables", "umount")


@dataclass(frozen=True)
class Node:
    """A node as reported by up()/status()."""

    name: str
    index: int
    address: str
    roles: tuple[str, ...]
    state: str  # "running" | "stopped"
    pid: int | None  # systemd-nspawn's PID on the host
    boot_seconds: float | None  # nspawn start -> first successful `ssh true` (last boot)


class Lab:
    """A named lab. Cheap to construct; every method reads the on-disk state afresh."""

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        image: str | Path | None = None,
        subnet: str | None = None,
        state_dir: Path | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.name = state.validate_name(name)
        self.paths = LabPaths.for_lab(name, state_dir)
        self.cache_dir = cache_dir or state.cache_dir()
        self._image = Path(image).resolve() if image else None
        self._subnet = network.parse_subnet(subnet) if subnet else None
        #: the base image used by the last up() (build times for reports)
        self.image_info: base_image.ImageInfo | None = None

    # ---- paths other code uses ----
    @property
    def inventory_path(self) -> Path:
        return self.paths.inventory

    @property
    def key_path(self) -> Path:
        return self.paths.key

    @property
    def known_hosts_path(self) -> Path:
        return self.paths.known_hosts

    @property
    def bridge(self) -> str:
        return network.bridge_name(self.name)

    def exists(self) -> bool:
        return self.paths.state.exists()

    def state(self) -> LabState | None:
        return state.load(self.paths)

    # ---- lifecycle ----
    def up(self, nodes: int | None = None, control_planes: int | None = None) -> list[Node]:
        """Create or converge the lab to `nodes` running nodes (adds nodes, starts stopped ones)."""
        if nodes is not None:  # bad input is reported before anything else (even without root)
            state.validate_counts(nodes, control_planes if control_planes is not None else 1)
        host.require()
        with self._locked():
            st = self._state_for_up(nodes, control_planes)
            self._prepare_host(st)
            specs = self._specs(st)
            self._create_nodes(specs, st)
            self._start_and_wait([s for s in specs if not nodemod.is_running(s)], st)
            self._write_inventory(st)
        return self.status()

    def start(self, names: Sequence[str] = ()) -> list[Node]:
        """Start stopped nodes (all, or the named ones)."""
        host.require()
        with self._locked():
            st = self._require_state()
            self._prepare_host(st)
            specs = self._specs(st)
            chosen = self._select(specs, names)
            self._create_nodes(specs, st)
            self._start_and_wait([s for s in chosen if not nodemod.is_running(s)], st)
        return self.status()

    def stop(self, names: Sequence[str] = ()) -> list[Node]:
        """Clean poweroff of nodes (all, or the named ones); stopping the whole lab also stops its proxy."""
        host.require(DOWN_PROGRAMS)
        with self._locked():
            st = self._require_state()
            specs = self._specs(st)
            nodemod.stop_many(self._select(specs, names))
            if not names:
                proxy.stop(self._proxy_paths(), st.proxy)
                state.save(self.paths, st.with_(proxy=None))
        return self.status()

    def down(self) -> None:
        """Remove everything of the lab except the cached base image and apt cache; idempotent,
        and works on a lab whose processes were killed from outside."""
        host.require(DOWN_PROGRAMS)
        with self._locked(removing=True):
            st = self.state()
            specs = self._specs(st) if st else []
            known = {s.name for s in specs}
            # nodes the state does not list: an interrupted up, or state files deleted under running nodes
            extra = set(nodemod.running_machines(self.paths.nodes))
            if self.paths.nodes.is_dir():
                extra.update(d.name for d in self.paths.nodes.iterdir() if d.is_dir())
            for name in sorted(extra - known):
                specs.append(NodeSpec(self.name, name, 0, ipaddress.IPv4Address("0.0.0.0"), self.paths.node_dir(name)))
            nodemod.stop_many(specs)
            proxy.stop(self._proxy_paths(), st.proxy if st else None)
            for link in sorted(network.lab_links(self.name), key=lambda n: n == self.bridge):
                network.delete_link(link)  # veths first, the bridge last
            network.remove_guard_rules(self.name)
            leftovers = cgroups.find_lab_dirs(self.name)
            cgroups.kill_all(leftovers)
            for d in leftovers:
                cgroups.remove_tree(d)
            fsutil.unmount_all(self.paths.root)
            fsutil.remove_tree(self.paths.root)
            log.info("lab %s removed", self.name)

    def status(self) -> list[Node]:
        st = self.state()
        if st is None:
            return []
        out = []
        for spec in self._specs(st):
            rt = nodemod.read_runtime(spec)
            running = rt is not None and proc.alive(rt.nspawn)
            out.append(
                Node(
                    spec.name,
                    spec.index,
                    str(spec.address),
                    tuple(inv.roles_for(spec.index, st.control_planes)),
                    "running" if running else "stopped",
                    rt.nspawn.pid if running and rt else None,
                    rt.boot_seconds if rt else None,
                )  # fmt: skip
            )
        return out

    # ---- commands on nodes ----
    def target(self, node: str | Node) -> SshTarget:
        name = node.name if isinstance(node, Node) else node
        st = self._require_state()
        for spec in self._specs(st):
            if spec.name == name:
                return SshTarget(str(spec.address), self.paths.key, self.paths.known_hosts)
        raise InputError(f"lab {self.name} has no node {name!r}", hint=f"kprov lab status --name {self.name}")

    def run(self, node: str | Node, argv: Sequence[str], *, tty: bool = False, timeout: float | None = None) -> int:
        """Run argv on a node with this process's stdin/stdout/stderr; returns its exit code."""
        return subprocess.run(self.target(node).argv(argv, tty=tty), timeout=timeout).returncode

    def capture(
        self, node: str | Node, argv: Sequence[str], *, input: str | None = None, timeout: float | None = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run argv on a node and capture its output (text)."""
        return subprocess.run(
            self.target(node).argv(argv), input=input, capture_output=True, text=True, timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )  # fmt: skip

    # ---- internals ----
    @contextlib.contextmanager
    def _locked(self, removing: bool = False) -> Iterator[None]:
        """One lab operation at a time (two `kprov lab up` in parallel would race on mounts).

        The lock file (`<state dir>/.<lab>.lock`, empty) is never unlinked: a process waiting on the
        old file would get a lock nobody else checks, while the next one locks a new file — two holders."""
        self.paths.lock.parent.mkdir(parents=True, exist_ok=True)
        with open(self.paths.lock, "a") as fh:  # "a": never truncate a file another process holds
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                # a lab that does not exist (down, or an up refused for bad input) leaves only its lock file
                if removing or not self.paths.state.exists():
                    with contextlib.suppress(OSError):
                        self.paths.root.rmdir()

    @contextlib.contextmanager
    def _all_labs_locked(self) -> Iterator[None]:
        """Subnet choice + bridge creation are serialised across labs."""
        lock = self.paths.lock.parent / ".kprov-labs.lock"
        with open(lock, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _require_state(self) -> LabState:
        st = self.state()
        if st is None:
            raise InputError(f"lab {self.name!r} does not exist", hint=f"create it: kprov lab up --name {self.name}")
        return st

    def _other_labs_subnets(self) -> list[ipaddress.IPv4Network]:
        nets = []
        root = self.paths.root.parent
        for f in root.glob("*/state.json") if root.is_dir() else []:
            if f.parent.name != self.name:
                try:
                    nets.append(ipaddress.IPv4Network(state.LabState.from_json(f.read_text()).subnet))
                except (ValueError, KeyError, TypeError):
                    continue
        return nets

    def _state_for_up(self, nodes: int | None, control_planes: int | None) -> LabState:
        st = self.state()
        count = nodes if nodes is not None else (st.nodes if st else DEFAULT_NODES)
        cps = control_planes if control_planes is not None else (st.control_planes if st else 1)
        state.validate_counts(count, cps)
        image_dir = self._image or (Path(st.image) if st else base_image.default_image_dir(self.cache_dir))
        if st is not None:
            if self._subnet is not None and str(self._subnet) != st.subnet:
                raise InputError(
                    f"lab {self.name} already uses subnet {st.subnet}, not {self._subnet}",
                    hint=f"drop --subnet, or remove the lab first: kprov lab down --name {self.name}",
                )
            if self._image is not None and str(self._image) != st.image:
                raise InputError(f"lab {self.name} already uses image {st.image}",
                                 hint=f"drop --image, or kprov lab down --name {self.name} first")  # fmt: skip
            if count < st.nodes:
                raise InputError(
                    f"lab {self.name} has {st.nodes} nodes; --nodes {count} would remove nodes",
                    hint=f"kprov lab up keeps nodes; use --nodes {st.nodes} or kprov lab down --name {self.name}",
                )
            if count > network.max_nodes(ipaddress.IPv4Network(st.subnet)):
                raise InputError(
                    f"subnet {st.subnet} has room for {network.max_nodes(ipaddress.IPv4Network(st.subnet))} nodes"
                )
        else:
            foreign = network.lab_links(self.name)
            if foreign:
                raise InputError(
                    f"name collision: network interface {foreign[0]} exists but lab {self.name!r} does not",
                    hint=f"pick another --name, or delete the leftover: ip link del {foreign[0]}",
                )
        with self._all_labs_locked():
            taken = self._other_labs_subnets()
            if st is None:
                subnet = self._subnet or network.pick_subnet(taken)
                network.check_subnet_free(subnet, taken, own_bridge=self.bridge)
                if count > network.max_nodes(subnet):
                    raise InputError(f"subnet {subnet} has room for {network.max_nodes(subnet)} nodes")
                st = LabState(self.name, str(subnet), self.bridge, str(image_dir), count, cps)
                log.info("lab %s: subnet %s, bridge %s", self.name, subnet, self.bridge)
            else:
                # the subnet is ours, but something else may have claimed it while the lab was down
                network.check_subnet_free(ipaddress.IPv4Network(st.subnet), taken, own_bridge=self.bridge)
                st = st.with_(nodes=count, control_planes=cps)
            self.paths.root.mkdir(parents=True, exist_ok=True)
            state.save(self.paths, st)
            network.ensure_bridge(st.bridge, ipaddress.IPv4Network(st.subnet))
        return st

    def _prepare_host(self, st: LabState) -> None:
        """Image, bridge, guard rules, inotify limits, key, proxy: everything nodes share."""
        subnet = ipaddress.IPv4Network(st.subnet)
        self.image_info = base_image.ensure(Path(st.image), mirror.host_mirrors())
        with self._all_labs_locked():
            network.ensure_bridge(st.bridge, subnet)
            network.ensure_guard_rules(self.name)
        host.raise_inotify_limits()
        keys.ensure(self.paths.key, f"kprov-lab-{self.name}")
        self.paths.known_hosts.touch(mode=0o644)
        pid = proxy.ensure(self._proxy_paths(), str(network.gateway(subnet)), proxy.PORT, st.proxy)
        if pid != st.proxy:
            state.save(self.paths, st.with_(proxy=pid))

    def _proxy_paths(self) -> proxy.ProxyPaths:
        return proxy.ProxyPaths(self.paths.proxy, self.cache_dir / "apt-cacher-ng" / self.name)

    def _net(self, st: LabState) -> LabNet:
        subnet = ipaddress.IPv4Network(st.subnet)
        return LabNet(
            self.name, subnet, st.bridge, Path(st.image), Path(f"{self.paths.key}.pub").read_text().strip(),
            self.paths.known_hosts, f"http://{network.gateway(subnet)}:{proxy.PORT}",
        )  # fmt: skip

    def _specs(self, st: LabState) -> list[NodeSpec]:
        subnet = ipaddress.IPv4Network(st.subnet)
        return [
            NodeSpec(
                self.name,
                f"{self.name}-{i}",
                i,
                network.node_address(subnet, i),
                self.paths.node_dir(f"{self.name}-{i}"),
            )
            for i in range(1, st.nodes + 1)
        ]

    def _select(self, specs: list[NodeSpec], names: Sequence[str]) -> list[NodeSpec]:
        if not names:
            return specs
        by_name = {s.name: s for s in specs}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise InputError(f"lab {self.name} has no node {unknown[0]!r}", hint=f"nodes: {', '.join(by_name)}")
        return [by_name[n] for n in names]

    def _create_nodes(self, specs: list[NodeSpec], st: LabState) -> None:
        """Mount + first-time identity for every node (in parallel), then known_hosts and /etc/hosts."""
        net = self._net(st)
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            host_keys = list(pool.map(lambda s: nodemod.create(s, net, specs), specs))
        lines = [f"{s.address} {k}" for s, k in zip(specs, host_keys, strict=True)]
        fsutil.write_if_changed(self.paths.known_hosts, "\n".join(lines) + "\n")

    def _start_and_wait(self, specs: list[NodeSpec], st: LabState) -> None:
        if not specs:
            log.info("lab %s: all nodes already running", self.name)
            return
        net = self._net(st)
        strays = [s for s in specs if nodemod.nspawn_pids(s)]
        if strays:  # running nspawn without a runtime file: stop it cleanly before a fresh boot
            nodemod.stop_many(strays)
            for s in strays:
                nodemod.mount_root(s, net)
        runtimes = {s.name: nodemod.start(s, net) for s in specs}
        items = [
            (s.name, SshTarget(str(s.address), self.paths.key, self.paths.known_hosts), runtimes[s.name].started_at,
             (lambda rt=runtimes[s.name]: proc.alive(rt.nspawn)))
            for s in specs
        ]  # fmt: skip
        t0 = time.monotonic()
        results = wait_ready(items, timeout=READY_TIMEOUT)
        by_name = {s.name: s for s in specs}
        failed = []
        for r in results:
            if r.ready and r.seconds is not None:
                nodemod.record_boot(by_name[r.name], r.seconds)
            else:
                failed.append(r)
        log.info("lab %s: %d node(s) reachable in %.1fs", self.name, len(results) - len(failed), time.monotonic() - t0)
        if failed:
            first = by_name[failed[0].name]
            raise LabError(
                f"{len(failed)} node(s) did not come up: " + ", ".join(f"{r.name} ({r.reason})" for r in failed),
                hint=f"see {first.console_log}; retry with kprov lab up --name {self.name}",
                detail=nodemod.console_tail(first),
            )

    def host_entries(self, st: LabState | None = None) -> list[dict]:
        st = st or self._require_state()
        return [
            inv.host_entry(s.name, str(s.address), inv.roles_for(s.index, st.control_planes)) for s in self._specs(st)
        ]

    def _write_inventory(self, st: LabState) -> None:
        inv.write(
            self.paths.inventory, inv.document(self.name, self.host_entries(st), self.paths.key, self.paths.known_hosts)
        )

    def write_inventory(self) -> Path:
        """(Re)write the inventory from the state; returns its path."""
        self._write_inventory(self._require_state())
        return self.paths.inventory

"""Small helpers the maintenance actions share: one SSH session per host, fanned out over hosts."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from provisioner.errors import CommandFailed, HostConnectionError, KprovError
from provisioner.inventory.model import Host, Inventory
from provisioner.transport.ssh import CommandResult, ConnectOptions, SSHHost

T = TypeVar("T")


@contextmanager
def session(host: Host, connect: ConnectOptions) -> Iterator[SSHHost]:
    """A connected SSHHost, closed on exit."""
    ssh = SSHHost(host, connect)
    try:
        ssh.connect()
        yield ssh
    finally:
        ssh.close()


def on_hosts(hosts: Sequence[Host], connect: ConnectOptions, fn: Callable[[SSHHost], T]) -> dict[str, T | KprovError]:
    """fn on every host in parallel; per host its value or the KprovError it raised (never hides a host)."""

    def one(h: Host) -> T | KprovError:
        try:
            with session(h, connect) as ssh:
                return fn(ssh)
        except KprovError as exc:
            return exc

    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=min(32, len(hosts))) as pool:
        return dict(zip((h.name for h in hosts), pool.map(one, hosts)))


def checked(ssh: SSHHost, res: CommandResult, what: str, hint: str | None = None) -> CommandResult:
    """res, or CommandFailed naming the host and the step with the stderr tail."""
    if res.rc != 0:
        raise CommandFailed(
            f"{ssh.host.name}: {what} failed (exit {res.rc})", rc=res.rc, stderr_tail=res.stderr_tail(), hint=hint
        )
    return res


def unreachable(results: dict[str, object]) -> list[str]:
    return [name for name, r in results.items() if isinstance(r, HostConnectionError)]


@contextmanager
def maintenance_lock(
    inv: Inventory, connect: ConnectOptions, what: str, hosts: Sequence[Host] | None = None
) -> Iterator[None]:
    """What `up` takes, for a day-two action: the control machine's lock of the cluster, then every reachable
    host's kprov lock, held until the action ends. A concurrent run (up, another upgrade) is LockHeld, exit 2,
    before anything changes. Plays the action runs itself (the upgrade's binaries) re-enter these locks."""
    from provisioner.engine.lock import cluster_lock, host_key, hosts_held, owner_record
    from provisioner.errors import LockHeld

    targets = list(inv.hosts if hosts is None else hosts)
    owner = owner_record(what)
    with cluster_lock(inv.cluster.name, what):

        def take(h: Host) -> SSHHost | KprovError | None:
            ssh = SSHHost(h, connect)
            try:
                ssh.connect()
            except KprovError:
                ssh.close()
                return None  # unreachable: the action's own preflight decides what that means
            try:
                ssh.hold_lock(owner)
            except KprovError as exc:
                ssh.close()
                return exc
            return ssh

        with ThreadPoolExecutor(max_workers=max(1, min(32, len(targets)))) as pool:
            taken = list(pool.map(take, targets))
        held = [t for t in taken if isinstance(t, SSHHost)]
        try:
            refused: list[KprovError] = [t for t in taken if isinstance(t, LockHeld)]
            refused = refused or [t for t in taken if isinstance(t, KprovError)]
            if refused:
                raise refused[0]
            with hosts_held(
                [
                    host_key(h.address, h.port, h.name)
                    for h, t in zip(targets, taken, strict=True)
                    if isinstance(t, SSHHost)
                ]
            ):
                yield
        finally:
            for ssh in held:
                ssh.close()

"""Small helpers the maintenance actions share: one SSH session per host, fanned out over hosts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

from provisioner.errors import CommandFailed, HostConnectionError, KprovError
from provisioner.inventory.model import Host
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


def on_hosts(hosts: Sequence[Host], connect: ConnectOptions,
             fn: Callable[[SSHHost], T]) -> dict[str, T | KprovError]:
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
        raise CommandFailed(f"{ssh.host.name}: {what} failed (exit {res.rc})", rc=res.rc,
                            stderr_tail=res.stderr_tail(), hint=hint)
    return res


def unreachable(results: dict[str, object]) -> list[str]:
    return [name for name, r in results.items() if isinstance(r, HostConnectionError)]

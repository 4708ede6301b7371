"""SSH transport: one persistent connection per host (Fabric/paramiko), commands as argv lists.

Quoting happens here and only here (`shlex.join`). Scripts are sent on stdin to `sh -s`, so a
whole change (several commands + file writes) costs one round trip.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shlex
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
from fabric import Config as FabricConfig
from fabric import Connection

from provisioner.errors import CommandTimedOut, HostConnectionError, HostKeyError, KprovError, LockHeld
from provisioner.inventory.model import Host
from provisioner.secrets import Redactor
from provisioner.transport.host_lock import HOST_LOCK_SCRIPT, describe_owner, host_held_here, host_key
from provisioner.transport.reasons import connect_failure

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20
#: after a command's exit-status, how long a silence ends the wait for the rest of its output (EOF)
EOF_GRACE_S = 1.0
#: a refused channel open (sshd's MaxSessions reached by another client) is retried this many times
CHANNEL_OPEN_ATTEMPTS = 10
#: exit status of a guarded script whose time ran out (GNU timeout's)
TIMED_OUT_RC = 124
#: the guarded script could not be delivered whole
NOT_DELIVERED_RC = 125

# Runs a script sent on stdin so that nothing outlives kprov's interest in it. The script is read
# into a private mktemp directory (its exact length, $1), then run under `timeout` (its own process
# group: on expiry the whole group gets TERM, KILL 10 s later). The channel's stdin stays open while
# kprov waits; EOF on it means kprov is gone (killed, Ctrl-C, network) and the group is terminated.
GUARD = r"""set -u
d=$(mktemp -d) || exit 125
trap 'rm -rf "$d"' EXIT
head -c "$1" > "$d/s"
[ "$(wc -c < "$d/s")" -eq "$1" ] || { echo "kprov: the script did not arrive whole" >&2; exit 125; }
exec 3<&0
timeout -k 10 "$2" sh "$d/s" </dev/null 3<&- &
p=$!
( cat <&3 >/dev/null 2>&1; kill -TERM "$p" 2>/dev/null ) >/dev/null 2>&1 &
w=$!
exec 3<&-
wait "$p"
rc=$?
kill "$w" 2>/dev/null
exit "$rc"
"""


def kprov_known_hosts() -> Path:
    """kprov's own known_hosts file (trust-on-first-use keys land here)."""
    base = Path(os.environ.get("KPROV_HOME", Path.home() / ".kprov"))
    return base / "known_hosts"


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str
    duration_ms: int

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        text = self.stderr.strip() or self.stdout.strip()
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class ConnectOptions:
    connect_timeout: float = 10.0
    connect_retries: int = 2
    retry_delay: float = 1.0
    accept_new_host_keys: bool = False
    #: seconds a remote step may run when the caller gives no limit of its own
    command_timeout: float = 1800.0


class _TofuPolicy(paramiko.MissingHostKeyPolicy):
    """Trust on first use: record unknown keys in kprov's known_hosts. Changed keys never reach here."""

    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="ascii") as fh:
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            os.chmod(self.path, 0o600)
        log.info("added new host key for %s to %s", hostname, self.path)


class _RejectPolicy(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyError(
            f"{hostname}: host key not known ({key.get_name()})",
            hint="verify the host and rerun with --accept-new-host-keys, or add it to known_hosts",
        )


def _known_host_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


_KNOWN_HOSTS_CACHE: dict[tuple[str, int, int], list] = {}
_KNOWN_HOSTS_LOCK = threading.Lock()


def _parsed_known_hosts(path: str) -> list:
    """Entries of a known_hosts file, parsed once per (path, size, mtime)."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    key = (path, st.st_size, st.st_mtime_ns)
    with _KNOWN_HOSTS_LOCK:
        if key not in _KNOWN_HOSTS_CACHE:
            keys = paramiko.HostKeys()
            try:
                keys.load(path)
            except (OSError, paramiko.SSHException) as exc:
                log.warning("cannot read known_hosts %s: %s", path, exc)
            _KNOWN_HOSTS_CACHE[key] = list(keys._entries)
        return list(_KNOWN_HOSTS_CACHE[key])


class SSHHost:
    """A live SSH connection to one inventory host."""

    def __init__(self, host: Host, options: ConnectOptions, redactor: Redactor | None = None) -> None:
        self.host = host
        self.options = options
        self.redactor = redactor or Redactor()
        self._conn: Connection | None = None
        self._gateway: Connection | None = None
        # sshd refuses channels beyond its MaxSessions: never ask for more at once (delegations from
        # many hosts to one control plane queue here instead)
        self._channels = threading.BoundedSemaphore(max(1, host.max_sessions))
        self._connect_lock = threading.Lock()
        self._lock_chan: paramiko.Channel | None = None

    # -- connection -------------------------------------------------------------------------
    def _make_connection(
        self, address: str, port: int, user: str, key: str | None, gateway: Connection | None, known_hosts: str | None
    ) -> Connection:
        connect_kwargs: dict[str, object] = {
            "banner_timeout": self.options.connect_timeout,
            "auth_timeout": self.options.connect_timeout,
            "allow_agent": key is None,
            "look_for_keys": key is None,
        }
        if key:
            connect_kwargs["key_filename"] = [key]
        # The inventory is the whole truth about how to reach a host: ~/.ssh/config is not read, so a
        # ProxyJump there can never make Fabric build a gateway that trusts any key (use `bastion:`,
        # verified like every host).
        conn = Connection(
            host=address,
            port=port,
            user=user,
            connect_kwargs=connect_kwargs,
            gateway=gateway or False,
            connect_timeout=self.options.connect_timeout,
            config=FabricConfig(overrides={"load_ssh_configs": False}),
        )
        client = conn.client
        # Fabric trusts any key by default; kprov verifies: system + kprov + inventory known_hosts.
        client._host_keys = paramiko.HostKeys()
        client._system_host_keys = paramiko.HostKeys()
        for candidate in (Path.home() / ".ssh" / "known_hosts", kprov_known_hosts(), known_hosts):
            if candidate and Path(candidate).is_file():
                # parsed once per run (per file version), not once per host: a big known_hosts costs
                # seconds across 100 connections; each client gets its own copy of the entry list
                client.get_host_keys()._entries.extend(_parsed_known_hosts(str(candidate)))
        policy: paramiko.MissingHostKeyPolicy = (
            _TofuPolicy(kprov_known_hosts()) if self.options.accept_new_host_keys else _RejectPolicy()
        )
        client.set_missing_host_key_policy(policy)
        return conn

    def connect(self) -> None:
        """Open the connection (with bounded retries for transient network errors only)."""
        with self._connect_lock:
            if self._conn is None:
                self._connect()

    def _connect(self) -> None:
        h = self.host
        attempts = 1 + max(0, self.options.connect_retries)
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                gateway = None
                if h.bastion is not None:
                    b = h.bastion
                    gateway = self._make_connection(b.address, b.port, b.user, b.ssh_key, None, h.known_hosts)
                    gateway.open()
                conn = self._make_connection(h.address, h.port, h.user, h.ssh_key, gateway, h.known_hosts)
                conn.open()
                transport = conn.client.get_transport()
                if transport is not None:
                    transport.set_keepalive(15)
                self._conn, self._gateway = conn, gateway
                return
            except HostKeyError:
                raise
            except paramiko.BadHostKeyException as exc:
                raise HostKeyError(
                    f"{h.name}: host key for {exc.hostname} CHANGED (expected {exc.expected_key.get_name()})",
                    hint="someone may be intercepting the connection; if the host was rebuilt, "
                    "remove its old key from known_hosts",
                ) from None
            except paramiko.AuthenticationException as exc:
                raise HostConnectionError(
                    f"{h.name}: SSH authentication failed for {h.user}@{h.address}:{h.port}: {exc}",
                    hint="check user and ssh_key in the inventory",
                ) from None
            except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
                last = exc
                if attempt + 1 < attempts:
                    time.sleep(self.options.retry_delay * (attempt + 1))
        raise HostConnectionError(
            f"{h.name}: cannot connect to {h.user}@{h.address}:{h.port}: "
            f"{connect_failure(last, h.port, self.options.connect_timeout) if last else 'unknown error'}",
            hint="check the address, that sshd runs and the network path (or a bastion)",
        )

    def hold_lock(self, owner: str) -> None:
        """Take this host's kprov lock for as long as the connection lives (see transport/host_lock.py).

        One session (and one of the host's channel slots) holds it; closing the connection, or kprov
        dying, releases it on the host. LockHeld (exit 2) when another run holds it."""
        # held already: by this connection, or by a day-two action of this process that runs plays inside it
        if self._lock_chan is not None or host_held_here(host_key(self.host.address, self.host.port, self.host.name)):
            return
        self._channels.acquire()
        chan: paramiko.Channel | None = None
        try:
            chan = self._open_channel()
            chan.settimeout(self.options.connect_timeout + 30)
            chan.exec_command(
                self._wrap(shlex.join(["sh", "-c", HOST_LOCK_SCRIPT, "kprov", self.host.name, owner]), None)
            )
            line = bytearray()
            while not line.endswith(b"\n") and len(line) < 8192:
                data = chan.recv(1)
                if not data:
                    break
                line += data
            status = line.decode("utf-8", "replace").strip()
            if status == "KPROV-LOCK-OK":
                self._lock_chan, chan = chan, None
                return
            if status.startswith("KPROV-LOCK-HELD"):
                holder = describe_owner(status.removeprefix("KPROV-LOCK-HELD").strip())
                raise LockHeld(
                    f"{self.host.name} is locked by {holder}",
                    hint="another kprov run is changing this host: wait for it to finish",
                )
            err = chan.recv_stderr(4096).decode("utf-8", "replace").strip() if chan.recv_stderr_ready() else ""
            raise KprovError(
                f"{self.host.name}: cannot take the kprov lock: {status or err or 'no answer'}",
                hint="kprov needs flock (util-linux) and a writable /run on the host",
            )
        except TimeoutError:
            raise HostConnectionError(
                f"{self.host.name}: no answer while taking the kprov lock", hint="check the host and rerun"
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostConnectionError(
                f"{self.host.name}: connection failed while taking the lock: {exc}", hint="check the host and rerun"
            ) from None
        finally:
            if chan is not None:
                chan.close()
                self._channels.release()

    def close(self) -> None:
        if self._lock_chan is not None:
            try:
                self._lock_chan.close()
            except Exception:
                pass
            self._lock_chan = None
            self._channels.release()
        for c in (self._conn, self._gateway):
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass
        self._conn = self._gateway = None

    # -- commands ---------------------------------------------------------------------------
    def _wrap(self, command: str, become: bool | None) -> str:
        if become if become is not None else (self.host.become and self.host.user != "root"):
            return "sudo -n -H -- sh -c " + shlex.quote(command)
        return command

    def _transport(self) -> paramiko.Transport:
        if self._conn is None:
            self.connect()
        assert self._conn is not None
        transport = self._conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise HostConnectionError(f"{self.host.name}: connection lost", hint="check the host and rerun")
        return transport

    def _open_channel(self) -> paramiko.Channel:
        """A new session channel; a refusal (sshd's MaxSessions, shared with other clients) is retried."""
        transport = self._transport()
        for attempt in range(CHANNEL_OPEN_ATTEMPTS):
            try:
                return transport.open_session(timeout=self.options.connect_timeout)
            except paramiko.SSHException as exc:
                # A refusal is a ChannelException, but paramiko keeps one exception slot per transport:
                # with concurrent opens another thread may take it, and this one sees a bare "Unable to
                # open channel." Both are refusals (sshd may still count channels we just closed).
                refused = isinstance(exc, paramiko.ChannelException) or "Unable to open channel" in str(exc)
                if not refused or not transport.is_active():
                    raise
                if attempt + 1 == CHANNEL_OPEN_ATTEMPTS:
                    raise HostConnectionError(
                        f"{self.host.name}: sshd refused a new session {attempt + 1} times ({exc})",
                        hint=f"lower max_sessions for this host (now {self.host.max_sessions}) below its sshd "
                        "MaxSessions, or raise MaxSessions",
                    ) from None
                time.sleep(min(2.0, 0.1 * 2**attempt))
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _session(self, command: str, what: str, hints: tuple[str, str]) -> Iterator[paramiko.Channel]:
        """One channel running `command`, within the host's channel bound; network failures become
        HostConnectionError ("... during <what>", hints for a stall and for a failure); the channel is
        always closed, so no remote command is left waiting for input that will never come."""
        with self._channels:
            chan: paramiko.Channel | None = None
            try:
                chan = self._open_channel()
                chan.settimeout(self.options.connect_timeout + 30)  # a send that stalls this long: gone
                chan.exec_command(command)
                yield chan
            except TimeoutError:
                raise HostConnectionError(
                    f"{self.host.name}: the connection stalled during {what}", hint=hints[0]
                ) from None
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise HostConnectionError(
                    f"{self.host.name}: connection failed during {what}: {exc}", hint=hints[1]
                ) from None
            finally:
                if chan is not None:
                    chan.close()

    def exec(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        become: bool | None = None,
        keep_stdin_open: bool = False,
        grace: float = 0.0,
    ) -> CommandResult:
        """Run a shell command line (already quoted) and collect its output.

        Every wait is bounded: `timeout` (default: the connection's command_timeout) ends the command.
        With `keep_stdin_open` the channel's stdin is not closed after `stdin` was sent (see GUARD)."""
        limit = timeout or self.options.command_timeout
        start = time.monotonic()
        with self._session(
            self._wrap(command, become),
            "a command",
            ("check the host and the network path, then rerun", "check the host and rerun; kprov resumes idempotently"),
        ) as chan:
            out, err = bytearray(), bytearray()
            if stdin is not None:
                view = memoryview(stdin)
                while view:
                    sent = chan.send(view[:32768])
                    view = view[sent:]
                    self._drain(chan, out, err)
            if not keep_stdin_open:
                chan.shutdown_write()
            rc = self._wait(chan, out, err, start + limit + grace, limit)
        return CommandResult(
            rc=rc,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            duration_ms=int((time.monotonic() - start) * 1000),
        )

    def _wait(self, chan: paramiko.Channel, out: bytearray, err: bytearray, deadline: float, limit: float) -> int:
        # Read until EOF, not until exit-status: OpenSSH may send the status before the last output
        # (under load this cut fact batches short). But a background child that keeps stdout open
        # (`daemon &`) delays EOF until it exits: once the status is in, stop after EOF_GRACE_S
        # without new output. poll() sleeps on the pipe paramiko sets for new output, EOF or close,
        # instead of a sleep loop (30 such threads cost CPU on busy hosts); exit-status does not
        # wake it, hence the 0.2 s bound.
        waiter = select.poll()
        waiter.register(chan.fileno(), select.POLLIN)
        quiet_until: float | None = None
        while not (chan.eof_received or chan.closed):
            if time.monotonic() > deadline and not chan.exit_status_ready():
                raise CommandTimedOut(
                    f"{self.host.name}: command timed out after {limit:g}s",
                    hint="the host may be overloaded; raise the task's timeout",
                    detail=err.decode("utf-8", "replace")[-2000:] or None,
                )
            if quiet_until is None and chan.exit_status_ready():
                quiet_until = time.monotonic() + EOF_GRACE_S
            if quiet_until is not None and time.monotonic() >= quiet_until:
                break
            waiter.poll(200)
            received = len(out) + len(err)
            self._drain(chan, out, err)
            if quiet_until is not None and len(out) + len(err) > received:
                quiet_until = time.monotonic() + EOF_GRACE_S
        self._drain(chan, out, err)
        # EOF without an exit status: the session was cut (sshd killed, host going down), the outcome
        # of the command is unknown. paramiko reports that as -1, which no real command returns.
        chan.status_event.wait(EOF_GRACE_S + 5)
        rc = chan.recv_exit_status() if chan.status_event.is_set() else -1
        if rc == -1:
            raise HostConnectionError(
                f"{self.host.name}: the session ended before the command did (its outcome on the host is unknown)",
                hint="check the host (sshd restarted? out of memory?) and rerun",
            )
        return rc

    @staticmethod
    def _drain(chan: paramiko.Channel, out: bytearray, err: bytearray) -> None:
        while chan.recv_ready():
            out += chan.recv(65536)
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        become: bool | None = None,
    ) -> CommandResult:
        """Run an argv list: quoted once, here; `timeout` ends it (and its process group) on the host too."""
        limit = timeout or self.options.command_timeout
        return self.exec(
            shlex.join(["timeout", "-k", "10", f"{limit:g}", *argv]),
            stdin=stdin,
            timeout=limit,
            become=become,
            grace=15,
        )

    def script(self, script: str, *, timeout: float | None = None, become: bool | None = None) -> CommandResult:
        """Run a POSIX sh script: one round trip whatever its length, bounded by `timeout`, and killed
        (its whole process group) on the host when it times out or kprov goes away (GUARD)."""
        limit = timeout or self.options.command_timeout
        body = script.encode()
        # the guard ends the script itself at `limit`; the local bound 15 s later is the backstop
        res = self.exec(
            shlex.join(["sh", "-c", GUARD, "kprov", str(len(body)), f"{limit:g}"]),
            stdin=body,
            timeout=limit,
            become=become,
            keep_stdin_open=True,
            grace=15,
        )
        if res.rc == NOT_DELIVERED_RC and "did not arrive whole" in res.stderr:
            raise HostConnectionError(
                f"{self.host.name}: the script did not arrive whole",
                hint="check the host and the network path, then rerun",
            )
        if res.rc == TIMED_OUT_RC and res.duration_ms >= (limit - 1) * 1000:
            raise CommandTimedOut(
                f"{self.host.name}: command timed out after {limit:g}s and was stopped "
                "(what it changed before is unknown)",
                hint="the host may be overloaded; raise the task's timeout",
                detail=res.stderr_tail() or None,
            )
        return res

    def fetch(self, remote_path: str, *, become: bool | None = None) -> bytes:
        """Read a remote file (via cat, so it works with sudo)."""
        res = self.run(["cat", "--", remote_path], become=become)
        if res.rc != 0:
            from provisioner.errors import CommandFailed

            raise CommandFailed(
                f"{self.host.name}: cannot read {remote_path}", rc=res.rc, stderr_tail=res.stderr_tail()
            )
        return res.stdout.encode("utf-8", "surrogateescape")

    def put_stream(self, remote_path: str, fh, *, offset: int = 0, chunk: int = 1 << 20) -> int:
        """Append a local file object from `offset` to remote_path (resumable big uploads)."""
        from provisioner.errors import CommandFailed

        q = shlex.quote(remote_path)
        redirect = ">>" if offset else ">"
        sent_total = 0
        with self._session(
            self._wrap(f"cat {redirect} {q}", None),
            "an upload",
            (
                "check the host and the network path, then rerun (uploads resume)",
                "check the host and rerun; the upload resumes",
            ),
        ) as chan:
            fh.seek(offset)
            while True:
                data = fh.read(chunk)
                if not data:
                    break
                chan.sendall(data)
                sent_total += len(data)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            rc = self._wait(
                chan, out, err, time.monotonic() + self.options.command_timeout, self.options.command_timeout
            )
        if rc != 0:
            raise CommandFailed(
                f"{self.host.name}: upload to {remote_path} failed", rc=rc, stderr_tail=err.decode("utf-8", "replace")
            )
        return sent_total

"""kprov command line: the only place that prints and exits."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import traceback as tb

import click

from provisioner import __version__
from provisioner.cli import cluster, run, smoke
from provisioner.errors import ExitStatus, KprovError

#: every command, registered here and nowhere else. The run and cluster commands are imported at start;
#: the feature groups on first use (`ec2` pulls in boto3, 0.3 s), and a module that fails to import is an
#: error, never a command silently missing from `kprov --help`.
_COMMANDS: dict[str, click.Command] = {
    "up": run.up,
    "plan": run.plan,
    "apply": run.apply,
    "smoke": smoke.smoke,
    "reset": cluster.reset,
    "add-node": cluster.add_node,
    "status": cluster.status,
    "kubeconfig": cluster.kubeconfig,
}
_LAZY_COMMANDS = {
    "lab": "provisioner.cli.lab:lab",
    "bundle": "provisioner.cli.bundle:bundle",
    "ec2": "provisioner.cli.ec2:ec2",
    "vagrant": "provisioner.cli.vagrant:vagrant",
    "ci-smoke": "provisioner.cli.ec2:ci_smoke",
    "inventory": "provisioner.cli.inventory:inventory",
    "certs": "provisioner.cli.maintenance:certs",
    "etcd": "provisioner.cli.maintenance:etcd",
    "upgrade": "provisioner.cli.maintenance:upgrade",
    "remove-node": "provisioner.cli.remove_node:remove_node",
}


class KprovGroup(click.Group):
    """Top-level group: the command table above and the single error boundary."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        return cmd if cmd is not None else self._load(name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = _LAZY_COMMANDS.get(name)
        if target is None:
            return _COMMANDS.get(name)
        module_name, attr = target.split(":")
        cmd = getattr(importlib.import_module(module_name), attr)
        if not isinstance(cmd, click.Command):
            raise TypeError(f"{target} is not a click command")
        _add_examples(name, cmd)
        return cmd


@click.group(cls=KprovGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kprov")
@click.option("--traceback", "show_traceback", is_flag=True, help="Show Python tracebacks on errors (for developers).")
@click.pass_context
def cli(ctx: click.Context, show_traceback: bool) -> None:
    """kprov: provision kubeadm Kubernetes clusters over SSH."""
    ctx.ensure_object(dict)
    ctx.obj["traceback"] = show_traceback
    if os.environ.get("NO_COLOR"):
        ctx.color = False  # every click.secho of every command (warnings, notes) without colour: no-color.org


for _cmd in _COMMANDS.values():
    cli.add_command(_cmd)

#: shown at the end of each command's --help, by command path (commands that set their own epilog keep it);
#: every command and group has 2-3 (tests/cli/test_selection.py walks the whole tree)
EXAMPLES = {
    "up": [
        "kprov up -i inventories/lab.yaml",
        "kprov up -i prod.yaml --limit 'worker,!w3' --no-smoke",
        "KPROV_INVENTORY=prod.yaml kprov up --log-format json > run.jsonl",
    ],
    "plan": [
        "kprov plan -i prod.yaml",
        "kprov plan -i prod.yaml --limit control_plane --diff",
        "kprov plan -i prod.yaml --list-tasks --tags containerd",
    ],
    "apply": [
        "kprov apply -i prod.yaml containerd",
        "kprov apply -i prod.yaml cni --limit 'worker[1:]'",
        "kprov apply -i prod.yaml containerd -e containerd_version=1.7.24-1",
    ],
    "reset": ["kprov reset -i lab.yaml --limit w3", "kprov reset -i lab.yaml --yes   # no prompt (scripts, CI)"],
    "add-node": ["kprov add-node -i prod.yaml --host w4", "kprov add-node -i prod.yaml --host w4 --host w5"],
    "status": ["kprov status -i prod.yaml", "kprov status -i prod.yaml --limit control_plane"],
    "smoke": ["kprov smoke -i prod.yaml", "kprov smoke -i prod.yaml --keep --node-port 30999"],
    "kubeconfig": [
        "export KUBECONFIG=$(kprov kubeconfig -i prod.yaml)",
        "kprov kubeconfig -i prod.yaml --merge --use   # context kprov-<cluster>",
        "kprov kubeconfig -i prod.yaml --print > admin.conf",
    ],
    "lab": ["kprov lab up --nodes 3", 'kprov plan -i "$(kprov lab inventory | tail -1)"', "kprov lab down"],
    "lab up": ["kprov lab up --nodes 3", "kprov lab up --name ha --nodes 5 --control-planes 3"],
    "lab down": ["kprov lab down", "kprov lab down --name ha"],
    "lab status": ["kprov lab status", "kprov lab status --name ha"],
    "lab inventory": ['kprov plan -i "$(kprov lab inventory | tail -1)"', "kprov lab inventory --name ha"],
    "lab ssh": ["kprov lab ssh lab-1 -- kubectl get nodes", "kprov lab ssh --name ha ha-2"],
    "lab stop": ["kprov lab stop", "kprov lab stop lab-3   # one node, disk kept"],
    "lab start": ["kprov lab start", "kprov lab start lab-3"],
    "bundle": [
        "kprov bundle build --kubernetes-version 1.20.2 --from-dir ./k8s -o kubernetes-1.20.2.tar",
        "kprov bundle verify kubernetes-1.20.2.tar",
        "kprov bundle inspect kubernetes-1.20.2.tar",
    ],
    "bundle build": [
        "kprov bundle build --kubernetes-version 1.20.2 --from-dir ./k8s -o kubernetes-1.20.2.tar",
        "kprov bundle build --kubernetes-version 1.20.2 --base-url URL -o kubernetes-1.20.2.tar",
    ],
    "bundle verify": [
        "kprov bundle verify kubernetes-1.20.2.tar",
        "kprov bundle verify kubernetes-1.20.2.tar && kprov up -i prod.yaml",
    ],
    "bundle inspect": [
        "kprov bundle inspect kubernetes-1.20.2.tar",
        "kprov bundle inspect --json kubernetes-1.20.2.tar",
    ],
    "ec2": [
        "kprov ec2 create -i inventories/ec2-example.yaml",
        "kprov ec2 inventory -i inventories/ec2-example.yaml --format table",
        "kprov ec2 destroy -i inventories/ec2-example.yaml --yes",
    ],
    "ec2 create": [
        "kprov ec2 create -i inventories/ec2-example.yaml",
        "kprov ec2 create -i inventories/ec2-example.yaml --ssh-cidr 203.0.113.7/32 --no-wait-ssh",
    ],
    "ec2 destroy": [
        "kprov ec2 destroy -i inventories/ec2-example.yaml",
        "kprov ec2 destroy -i inventories/ec2-example.yaml --yes   # no prompt (scripts, CI)",
    ],
    "ec2 inventory": [
        "kprov ec2 inventory -i inventories/ec2-example.yaml --format table",
        "kprov ec2 inventory -i inventories/ec2-example.yaml -o static.yaml",
    ],
    "ci-smoke": [
        "kprov ci-smoke -i inventories/ec2-example.yaml",
        "kprov ci-smoke -i inventories/ec2-example.yaml --events kprov-events.jsonl --summary summary.md",
    ],
    "vagrant": ["kprov vagrant inventory --dir vagrant/ -o vagrant.yaml", "kprov up -i vagrant.yaml"],
    "vagrant inventory": [
        "kprov vagrant inventory --dir vagrant/ -o vagrant.yaml",
        "kprov vagrant inventory --dir vagrant/ --node-ip query",
    ],
    "inventory": [
        "kprov inventory import hosts.ini -o cluster.yaml",
        "kprov inventory schema > kprov-inventory.schema.json",
    ],
    "inventory import": [
        "kprov inventory import hosts.ini -o cluster.yaml",
        "ansible-inventory -i inventory/ --list > inv.json && kprov inventory import inv.json",
    ],
    "inventory schema": [
        "kprov inventory schema > kprov-inventory.schema.json",
        "kprov inventory schema > schema.json && check-jsonschema --schemafile schema.json prod.yaml",
    ],
    "certs": ["kprov certs check -i prod.yaml", "kprov certs renew -i prod.yaml"],
    "certs check": [
        "kprov certs check -i prod.yaml",
        "kprov certs check -i prod.yaml --warn-days 60 --log-format json",
    ],
    "certs renew": ["kprov certs renew -i prod.yaml", "kprov certs renew -i prod.yaml --limit cp1"],
    "etcd": ["kprov etcd snapshot -i prod.yaml --keep 7", "kprov etcd restore -i prod.yaml --from SNAPSHOT.db --yes"],
    "etcd snapshot": ["kprov etcd snapshot -i prod.yaml", "kprov etcd snapshot -i prod.yaml --output /backup --keep 7"],
    "etcd restore": [
        "kprov etcd restore -i prod.yaml --from SNAPSHOT.db   # shows what it would do",
        "kprov etcd restore -i prod.yaml --from SNAPSHOT.db --yes",
    ],
    "upgrade": [
        "kprov upgrade -i prod.yaml   # preflight and plan only",
        "kprov upgrade -i prod.yaml --to 1.20.3 --yes",
        "kprov upgrade -i prod.yaml --reconfigure --yes",
    ],
    "remove-node": [
        "kprov remove-node -i prod.yaml --host w3 --dry-run",
        "kprov remove-node -i prod.yaml --host w3 --yes",
    ],
}


def _add_examples(path: str, cmd: click.Command) -> None:
    """Put the examples of `path` (and of its subcommands) at the end of their --help."""
    lines = EXAMPLES.get(path)
    if lines and not cmd.epilog:
        cmd.epilog = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            _add_examples(f"{path} {name}", sub)


for _name, _cmd in _COMMANDS.items():  # the lazy groups get theirs when loaded (KprovGroup._load)
    _add_examples(_name, _cmd)


def _want_traceback(argv: list[str]) -> bool:
    return "--traceback" in argv


def _error_line(text: str) -> None:
    """The `error:` line: red on a terminal unless NO_COLOR is set (https://no-color.org)."""
    click.secho(text, fg="red", err=True, color=False if os.environ.get("NO_COLOR") else None)


def report_error(exc: KprovError) -> None:
    """Print a KprovError as one line (+ detail lines, + hint) on stderr."""
    _error_line(f"error: {exc.message}")
    if exc.detail:
        for line in exc.detail.rstrip().splitlines()[-20:]:
            click.echo(f"  | {line}", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)


def quiet_library_loggers() -> None:
    """paramiko logs whole tracebacks for banner and socket errors ("Exception (client): Error reading SSH
    protocol banner") through logging's last-resort handler; kprov reports those failures itself, in one
    line. Its records reach stderr only with -v (run_options turns propagation back on)."""
    lg = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in lg.handlers):
        lg.addHandler(logging.NullHandler())
    lg.propagate = False


class _CtrlC:
    """SIGINT handler. First Ctrl-C: KeyboardInterrupt, so the run winds down (finally blocks run,
    connections close). Second: exit at once, also while threads are being joined, and without the
    interpreter's "Exception ignored" noise.

    The kernel may deliver SIGINT to any thread. Python runs the handler only in the main thread, and a
    main thread blocked on a lock (waiting for a worker's result) is woken only by a signal delivered to
    itself: a Ctrl-C that lands on a worker would go unnoticed until that wait ends (minutes, on a host
    that never answers). So a relay thread reads every delivery from the signal wakeup fd, whichever
    thread took it: the first wakes the main thread (a no-op signal sent to it alone), the second exits.
    """

    #: sent to the main thread only, to interrupt a blocking wait so the pending SIGINT handler runs
    WAKE = signal.SIGUSR2

    def __init__(self) -> None:
        self.pressed = 0
        self._seen = 0  # deliveries counted by the relay thread
        self._exiting = threading.Lock()
        self.pid = os.getpid()

    def reset(self) -> None:
        self.pressed = self._seen = 0

    def installed(self) -> bool:
        """This process's SIGINT handler, with its relay thread (a forked child has no relay thread)."""
        return self.pid == os.getpid() and signal.getsignal(signal.SIGINT) is self

    def __call__(self, signum: int, frame: object) -> None:
        self.pressed += 1
        if self.pressed == 1:
            sys.stderr.write("\ninterrupted: stopping (press Ctrl-C again to exit at once)\n")
            sys.stderr.flush()
            raise KeyboardInterrupt
        self._exit_now()

    def _exit_now(self) -> None:
        if self._exiting.acquire(blocking=False):  # the relay and the handler may both get here
            os.write(2, b"interrupted again: exiting now\n")
            os._exit(int(ExitStatus.INTERRUPTED))

    def start_relay(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        signal.signal(self.WAKE, lambda signum, frame: None)
        main = threading.main_thread().ident
        threading.Thread(target=self._relay, args=(read_fd, main), name="kprov-ctrl-c", daemon=True).start()

    def _relay(self, read_fd: int, main: int) -> None:
        while True:
            for signum in os.read(read_fd, 64):
                if signum != signal.SIGINT:
                    continue
                # a Ctrl-C while another handler is installed (ci-smoke's teardown shields itself) is that
                # handler's: it is not counted, but the main thread is still woken to run it
                ours = signal.getsignal(signal.SIGINT) is self
                if ours:
                    self._seen += 1
                if self._seen >= 2:
                    self._exit_now()
                signal.pthread_kill(main, self.WAKE)


_ctrl_c: _CtrlC | None = None


def _install_ctrl_c() -> _CtrlC | None:
    """The process's Ctrl-C handler, installed (with its relay thread) once per process."""
    global _ctrl_c
    if threading.current_thread() is not threading.main_thread():  # handlers live in the main thread
        return None
    handler = _ctrl_c
    if handler is None or not handler.installed():
        handler = _CtrlC()
        signal.signal(signal.SIGINT, handler)
        handler.start_relay()
        _ctrl_c = handler
    handler.reset()
    return handler


def _exit_interrupted(ctrl_c: _CtrlC | None) -> None:
    if ctrl_c is None or not ctrl_c.pressed:  # an aborted prompt, or no handler of ours
        click.echo("interrupted", err=True)
        sys.exit(int(ExitStatus.INTERRUPTED))
    sys.stdout.flush()
    sys.stderr.flush()
    # every finally block has run; do not wait for worker threads still blocked on the network
    os._exit(int(ExitStatus.INTERRUPTED))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI inside the one error boundary."""
    argv = list(sys.argv[1:] if argv is None else argv)
    show_tb = _want_traceback(argv)
    quiet_library_loggers()
    ctrl_c = _install_ctrl_c()
    if not argv:
        argv = ["--help"]  # `kprov` alone: the help, exit 0
    try:
        # every option can also come from KPROV_<COMMAND>_<OPTION>; -i also from KPROV_INVENTORY
        rc = cli.main(args=argv, prog_name="kprov", standalone_mode=False, auto_envvar_prefix="KPROV")
    except KprovError as exc:
        if show_tb:
            tb.print_exc()
        report_error(exc)
        sys.exit(int(exc.exit_status))
    except (click.exceptions.Abort, KeyboardInterrupt):
        _exit_interrupted(ctrl_c)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        # the same one-line + hint shape as every other error
        where = exc.ctx.command_path if exc.ctx is not None else "kprov"
        _error_line(f"error: {exc.format_message()}")
        click.echo(f"hint: see `{where} --help`", err=True)
        sys.exit(int(ExitStatus.BAD_INPUT))
    except click.ClickException as exc:
        _error_line(f"error: {exc.format_message()}")
        sys.exit(int(ExitStatus.BAD_INPUT))
    except Exception as exc:
        if show_tb:
            tb.print_exc()
        _error_line(f"error: internal error: {type(exc).__name__}: {exc}")
        click.echo("hint: rerun with --traceback and report it", err=True)
        sys.exit(int(ExitStatus.TASK_FAILED))
    sys.exit(int(rc or 0))


if __name__ == "__main__":
    main()

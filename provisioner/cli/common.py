"""Options and helpers shared by the run commands (up, apply, plan, reset, ...)."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from provisioner.actions.run import DEFAULT_FORKS, RunOutcome, RunRequest
from provisioner.errors import InputError, KprovError
from provisioner.inventory.yamlsource import load_yaml_file
from provisioner.reporting.sinks import JsonSink, TeeSink, open_log_file


class StderrHandler(logging.StreamHandler):
    """A logging handler that writes to whatever sys.stderr is at the time of the message (click and pytest
    swap it between commands)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def parse_extra_vars(items: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if item.startswith("@"):
            try:  # bounded like an inventory: regular file, size, depth, aliases, UTF-8 (yamlsource)
                data = load_yaml_file(Path(item[1:]), "-e vars", "give -e @path/to/vars.yaml").data or {}
            except InputError as exc:
                raise InputError(f"-e {item}: {exc.message}", hint=exc.hint) from None
            if not isinstance(data, dict):
                raise InputError(f"-e {item}: expected a mapping", hint="key: value lines")
            out.update(data)
            continue
        if item.lstrip().startswith("{"):
            # Ansible's rule: a JSON/YAML mapping gives typed values, key=value gives strings
            try:
                data = yaml.safe_load(item)
            except yaml.YAMLError:
                raise InputError(f"-e {item!r}: invalid JSON/YAML mapping", hint="e.g. -e '{\"a\": 1}'") from None
            if not isinstance(data, dict):
                raise InputError(f"-e {item!r}: expected a mapping", hint="e.g. -e '{\"a\": 1}'")
            out.update(data)
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not key.strip().isidentifier():
            raise InputError(f"-e {item!r}: expected key=value", hint="e.g. -e containerd_version=1.7.24-1")
        # always a string (tag=1.10 stays "1.10", pin=010 stays "010"); typed values: -e '{...}' or -e @file
        out[key.strip()] = value
    return out


def _split(values: tuple[str, ...]) -> list[str]:
    return [v for item in values for v in item.split(",") if v.strip()]


class Common(RunRequest):
    """The parsed run options (provisioner.actions.run.RunRequest) plus the event sink they choose."""

    def sink(self) -> Any:
        if self.log_format == "json":
            main: Any = JsonSink(sys.stdout)
        else:
            from provisioner.reporting.console import ProgressConsole

            main = ProgressConsole(verbose=self.verbose, show_diff=self.diff)
        if self.log_file:
            return TeeSink(main, JsonSink(open_log_file(self.log_file)))  # 0600, lives for the process
        return main


def _complete_roles(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    from provisioner.engine.roles import ROLES_DIR

    roles_dir = Path(ctx.params.get("roles_dir") or ROLES_DIR)
    try:
        return sorted(
            p.name for p in roles_dir.iterdir() if (p / "tasks.yaml").is_file() and p.name.startswith(incomplete)
        )
    except OSError:
        return []


def _complete_hosts(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Host and group names of the inventory given before (-i, or $KPROV_INVENTORY); never connects."""
    import os

    from provisioner.inventory.loader import load_inventory

    path = ctx.params.get("inventory") or os.environ.get("KPROV_INVENTORY")
    if not path:
        return []
    try:
        inv = load_inventory(path, resolve=False)
    except Exception:
        return []
    head, _, last = incomplete.rpartition(",")
    prefix = f"{head}," if head else ""
    bang = "!" if last.startswith("!") else ""
    names = [h.name for h in inv.hosts] + sorted(inv.group_members())
    return [f"{prefix}{bang}{n}" for n in dict.fromkeys(names) if n.startswith(last.lstrip("!"))]


complete_roles = _complete_roles

_inventory_option = click.option(
    "-i",
    "--inventory",
    required=True,
    type=click.Path(dir_okay=False),
    envvar="KPROV_INVENTORY",
    help="Inventory YAML file [env: KPROV_INVENTORY].",
)
#: options of commands that run roles (up, apply, plan, reset, add-node, ...), in --help order, by parameter name
_TASK_OPTIONS = {
    "limit": click.option(
        "-l",
        "--limit",
        multiple=True,
        shell_complete=_complete_hosts,
        help="Only hosts matching these patterns: host, group, glob (lab-*), !exclude, &intersect, "
        "group[0], group[1:]; comma-separated, repeatable.",
    ),
    "tags": click.option(
        "-t", "--tags", multiple=True, help="Only tasks with these tags (every task is tagged with its role)."
    ),
    "skip_tags": click.option("--skip-tags", multiple=True, help="Skip tasks with these tags."),
    "list_hosts": click.option("--list-hosts", is_flag=True, help="Print the hosts each play would run on, then exit."),
    "list_tasks": click.option("--list-tasks", is_flag=True, help="Print the tasks each play would run, then exit."),
    "list_tags": click.option("--list-tags", is_flag=True, help="Print the tags of each play, then exit."),
    "forks": click.option(
        "-f",
        "--forks",
        default=DEFAULT_FORKS,
        show_default=True,
        type=click.IntRange(1, 1024),
        help="Hosts worked on in parallel.",
    ),
    "diff": click.option("--diff", is_flag=True, help="Show diffs of changed files."),
    "roles_dir": click.option(
        "--roles-dir",
        type=click.Path(file_okay=False, exists=True),
        help="Use roles from this directory (its sibling templates/ holds their templates).",
    ),
}
#: options of every command that talks to hosts, by parameter name
_CONNECTION_OPTIONS = {
    "extra": click.option(
        "-e",
        "--extra-vars",
        "extra",
        multiple=True,
        help="key=value (a string), a JSON/YAML mapping (typed values) or @file.yaml; repeatable.",
    ),
    "log_format": click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True),
    "log_file": click.option(
        "--log-file", type=click.Path(dir_okay=False), help="Also append JSON events to this file."
    ),
    "verbose": click.option(
        "-v", "--verbose", count=True, help="Show ok/skipped tasks and diffs; -vvv: SSH library log."
    ),
    "accept_new_host_keys": click.option(
        "--accept-new-host-keys", is_flag=True, help="Trust unknown SSH host keys on first use."
    ),
    "connect_timeout": click.option("--connect-timeout", default=10.0, show_default=True, type=float),
}
#: the connection options a command may leave out (the others every such command uses)
_OPTIONAL_CONNECTION = {"extra", "log_format", "log_file"}


def run_options(
    func: Callable[..., Any] | None = None, *, tasks: bool | tuple[str, ...] = True, without: tuple[str, ...] = ()
) -> Any:
    """Decorate a click command with the run options; passes `common: Common`.

    A command never accepts an option it would ignore (`smoke --tags` is a usage error): `tasks=False`
    (smoke, ...) gives only the inventory and connection options; a tuple of names (`("limit",)`) gives
    those task options only, e.g. to the day-two commands that run no play selection of their own;
    `without` leaves out connection options the command does not use (`("extra", "log_file")`)."""
    if func is None:
        return functools.partial(run_options, tasks=tasks, without=without)

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        verbose = kwargs.pop("verbose")
        if verbose:
            logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO, stream=sys.stderr)
            paramiko_log = logging.getLogger("paramiko")
            paramiko_log.setLevel(logging.DEBUG if verbose > 2 else logging.WARNING)
            paramiko_log.propagate = True  # silenced by default (cli.main.quiet_library_loggers)
        limit = tuple(_split(kwargs.pop("limit", ())))
        common = Common(
            inventory=kwargs.pop("inventory"),
            limit=limit or None,
            tags=frozenset(_split(kwargs.pop("tags", ()))),
            skip_tags=frozenset(_split(kwargs.pop("skip_tags", ()))),
            extra_vars=parse_extra_vars(kwargs.pop("extra", ())),
            forks=kwargs.pop("forks", DEFAULT_FORKS),
            log_format=kwargs.pop("log_format", "text"),
            verbose=verbose,
            diff=kwargs.pop("diff", False),
            accept_new_host_keys=kwargs.pop("accept_new_host_keys"),
            connect_timeout=kwargs.pop("connect_timeout"),
            log_file=kwargs.pop("log_file", None),
            roles_dir=kwargs.pop("roles_dir", None),
            list_hosts=kwargs.pop("list_hosts", False),
            list_tasks=kwargs.pop("list_tasks", False),
            list_tags=kwargs.pop("list_tags", False),
        )
        _refuse_ansible_inventory(common.inventory)
        return func(common=common, **kwargs)

    decorated: Callable[..., Any] = wrapper
    chosen = tuple(_TASK_OPTIONS) if tasks is True else tasks or ()
    unknown = (set(chosen) - set(_TASK_OPTIONS)) | (set(without) - _OPTIONAL_CONNECTION)
    if unknown:
        raise ValueError(f"unknown or required run options: {sorted(unknown)}")
    task_options = [option for name, option in _TASK_OPTIONS.items() if name in chosen]
    connection = [option for name, option in _CONNECTION_OPTIONS.items() if name not in without]
    for option in reversed((_inventory_option, *task_options, *connection)):
        decorated = option(decorated)
    return decorated


def _refuse_ansible_inventory(path: str) -> None:
    """An Ansible inventory given to -i: say so and point at the importer (instead of a key error)."""
    from provisioner.actions.inventory_import import looks_like_ansible

    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size > 1 << 20:
            return
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return  # the loader reports unreadable files
    if looks_like_ansible(text):
        raise InputError(
            f"{path} is an Ansible inventory, not a kprov one",
            hint=f"convert it: kprov inventory import {path} -o kprov-inventory.yaml",
        )


def warn(message: str) -> None:
    """An action's warning: one yellow line on stderr."""
    click.secho(f"warning: {message}", fg="yellow", err=True)


def render_run(outcome: RunOutcome, common: Common) -> int:
    """After a run action: print the listing when only --list-* was asked; the exit code."""
    if outcome.report is None:
        print_listing(list(outcome.listed), common)
    return outcome.exit_status


def print_listing(listed: list[Any], common: Common) -> None:
    for i, pl in enumerate(listed, 1):
        head = f"play #{i} {pl.play.role} ({pl.play.hosts})"
        if common.list_hosts:
            click.echo(f"{head}: {len(pl.hosts)} host(s)")
            for h in pl.hosts:
                only = f"    (only the tasks tagged {pl.play.limited_tag})" if h in pl.limited else ""
                click.echo(f"    {h}{only}")
        if common.list_tasks:
            click.echo(f"{head}: {len(pl.tasks)} task(s)")
            for name, tags in pl.tasks:
                click.echo(f"    {name}    TAGS: [{', '.join(sorted(tags))}]")
            if pl.limited:
                click.echo(f"    on {', '.join(pl.limited)}: only the tasks tagged {pl.play.limited_tag}")
        if common.list_tags:
            click.echo(f"{head}    TAGS: [{', '.join(sorted(pl.tags))}]")
    if common.list_tags:
        click.echo(f"all tags: [{', '.join(sorted(frozenset().union(*(pl.tags for pl in listed))))}]")


yes_option = click.option(
    "-y", "--yes", is_flag=True, help="Do not ask for confirmation (required when there is no terminal to ask on)."
)


class NotConfirmed(KprovError):
    """The user answered no to a destructive command's question: nothing was changed."""


def confirm_removal(what: str, items: Sequence[str], yes: bool) -> None:
    """Destructive commands: on a terminal show what goes and ask; -y/--yes skips the question;
    without a terminal --yes is required (a script must say so explicitly)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise InputError(
            f"{what}: not confirmed (no terminal to ask on)", hint="add --yes (-y) to confirm in scripts and CI"
        )
    click.echo(f"{what}:", err=True)
    for item in items:
        click.echo(f"  - {item}", err=True)
    if not click.confirm("Continue?", default=False, err=True):
        raise NotConfirmed("not confirmed: nothing was changed")

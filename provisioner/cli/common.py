"""Options and helpers shared by the run commands (up, apply, plan, reset, ...)."""

from __future__ import annotations

import functools
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click
import yaml

from provisioner.engine.events import RunReport
from provisioner.engine.runner import RunOptions
from provisioner.errors import InputError
from provisioner.inventory.yamlsource import load_yaml_file
from provisioner.reporting.sinks import ConsoleSink, JsonSink, TeeSink
from provisioner.transport.ssh import ConnectOptions

DEFAULT_FORKS = 128


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
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not key.strip().isidentifier():
            raise InputError(f"-e {item!r}: expected key=value", hint="e.g. -e containerd_version=1.7.24-1")
        try:
            out[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _split(values: tuple[str, ...]) -> list[str]:
    return [v for item in values for v in item.split(",") if v.strip()]


@dataclass(frozen=True)
class Common:
    inventory: str
    limit: tuple[str, ...] | None
    tags: frozenset[str]
    skip_tags: frozenset[str]
    extra_vars: dict[str, Any]
    forks: int
    log_format: str
    verbose: int
    diff: bool
    accept_new_host_keys: bool
    connect_timeout: float
    log_file: str | None
    roles_dir: str | None = None

    def run_options(self, check: bool = False) -> RunOptions:
        return RunOptions(
            check=check, forks=self.forks, tags=self.tags, skip_tags=self.skip_tags, limit=self.limit,
            extra_vars=self.extra_vars,
            connect=ConnectOptions(connect_timeout=self.connect_timeout,
                                   accept_new_host_keys=self.accept_new_host_keys),
        )

    def sink(self) -> Any:
        if self.log_format == "json":
            main: Any = JsonSink(sys.stdout)
        else:
            main = ConsoleSink(verbose=self.verbose, show_diff=self.diff)
        if self.log_file:
            try:
                fh = open(self.log_file, "a", encoding="utf-8")  # noqa: SIM115 - lives for the process
            except OSError as exc:
                raise InputError(f"--log-file {self.log_file}: {exc.strerror}",
                                 hint="give a writable file path") from None
            return TeeSink(main, JsonSink(fh))
        return main


def run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a click command with the common run options; passes `common: Common`."""

    @click.option("-i", "--inventory", required=True, type=click.Path(dir_okay=False), help="Inventory YAML file.")
    @click.option("-l", "--limit", multiple=True, help="Only these hosts (comma-separated, repeatable).")
    @click.option("-t", "--tags", multiple=True, help="Only tasks with these tags.")
    @click.option("--skip-tags", multiple=True, help="Skip tasks with these tags.")
    @click.option("-e", "--extra-vars", "extra", multiple=True, help="key=value (YAML value) or @file.yaml.")
    @click.option("-f", "--forks", default=DEFAULT_FORKS, show_default=True, type=click.IntRange(1, 1024),
                  help="Hosts worked on in parallel.")
    @click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
    @click.option("--log-file", type=click.Path(dir_okay=False), help="Also append JSON events to this file.")
    @click.option("-v", "--verbose", count=True, help="Show ok/skipped tasks and diffs.")
    @click.option("--diff", is_flag=True, help="Show diffs of changed files.")
    @click.option("--accept-new-host-keys", is_flag=True, help="Trust unknown SSH host keys on first use.")
    @click.option("--connect-timeout", default=10.0, show_default=True, type=float)
    @click.option("--roles-dir", type=click.Path(file_okay=False, exists=True),
                  help="Use roles from this directory (its sibling templates/ holds their templates).")
    @functools.wraps(func)
    def wrapper(inventory: str, limit: tuple[str, ...], tags: tuple[str, ...], skip_tags: tuple[str, ...],
                extra: tuple[str, ...], forks: int, log_format: str, log_file: str | None, verbose: int, diff: bool,
                accept_new_host_keys: bool, connect_timeout: float, roles_dir: str | None, **kwargs: Any) -> Any:
        if verbose:
            logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO, stream=sys.stderr)
            paramiko_log = logging.getLogger("paramiko")
            paramiko_log.setLevel(logging.DEBUG if verbose > 2 else logging.WARNING)
            paramiko_log.propagate = True   # silenced by default (cli.main.quiet_library_loggers)
        common = Common(
            inventory=inventory, limit=tuple(_split(limit)) or None, tags=frozenset(_split(tags)),
            skip_tags=frozenset(_split(skip_tags)), extra_vars=parse_extra_vars(extra), forks=forks,
            log_format=log_format, verbose=verbose, diff=diff, accept_new_host_keys=accept_new_host_keys,
            connect_timeout=connect_timeout, log_file=log_file, roles_dir=roles_dir,
        )
        return func(common=common, **kwargs)

    return wrapper


def check_limit(common: Common, names: list[str]) -> None:
    if common.limit:
        unknown = [n for n in common.limit if n not in names]
        if unknown:
            raise InputError(f"--limit {unknown[0]!r} is not a host of this inventory",
                             hint=f"hosts: {', '.join(names)}")


def finish(report: RunReport, sink: Any, title: str = "RECAP") -> int:
    sink.recap(report, title)
    return int(report.exit_status())

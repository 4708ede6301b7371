"""command, wait_for, assert, set_fact."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from provisioner.errors import RoleError
from provisioner.modules.base import (
    ArgRenderer,
    Change,
    Decision,
    FactQuery,
    Module,
    NoChange,
    Param,
    SetVars,
    Skip,
    join,
    q,
    register,
)


@register
class CommandModule(Module):
    """Run a command (argv list, or a shell string with `shell`). `creates`/`removes` make it idempotent."""

    name = "command"
    params = {
        "argv": Param(list),
        "shell": Param(str),
        "creates": Param(str),
        "removes": Param(str),
        # a read-only probe: when it succeeds the host is already as wanted and the command does not run
        # (gathered with the role's other facts, so plan mode reports it exactly)
        "unless": Param(str),
        "chdir": Param(str),
        "stdin": Param(str),
        "env": Param(dict, default={}),
    }

    def normalize(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        if bool(args["argv"]) == bool(args["shell"]):
            raise RoleError(
                f"{where}: command needs exactly one of argv: or shell:",
                hint="argv: [kubeadm, version] (preferred) or shell: 'a | b'",
            )
        if args["argv"]:
            args["argv"] = [str(a) for a in args["argv"]]
        for key in args["env"]:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
                raise RoleError(
                    f"{where}: command env: {key!r} is not a valid variable name",
                    hint="use letters, digits and '_', not starting with a digit",
                )
        return args

    def facts(self, args: Mapping[str, Any]) -> list[FactQuery]:
        out = []
        if args["unless"]:
            out.append(
                FactQuery(
                    "unless",
                    f"unless:{args['unless']}",
                    f"{{ {args['unless']}\n}} >/dev/null 2>&1 </dev/null && echo yes || echo no",
                    lambda o, rc: o.strip() == "yes",
                )
            )
        for key in ("creates", "removes"):
            if args[key]:
                out.append(
                    FactQuery(
                        key,
                        f"file:{args[key]}",
                        f"[ -e {q(args[key])} ] && echo yes || echo no",
                        lambda o, rc: o.strip() == "yes",
                    )
                )
        return out

    def command_line(self, args: Mapping[str, Any]) -> str:
        body = join(args["argv"]) if args["argv"] else args["shell"]
        if args["env"]:
            body = "export " + " ".join(f"{k}={q(str(v))}" for k, v in args["env"].items()) + "\n" + body
        if args["chdir"]:
            body = f"cd {q(args['chdir'])}\n" + body
        if args["stdin"] is not None:
            # base64 (quote-free alphabet) piped in: no byte of the data can end a quote or a here-document
            data = base64.b64encode((args["stdin"] + "\n").encode()).decode()
            body = f"printf '%s' '{data}' | base64 -d | {{\n{body}\n}}"
        else:
            body = f"{{\n{body}\n}} </dev/null"
        return body

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        if args["creates"] and facts.get("creates"):
            return Skip(f"{args['creates']} exists")
        if args["removes"] and not facts.get("removes"):
            return Skip(f"{args['removes']} does not exist")
        if args["unless"] and facts.get("unless"):
            return NoChange("already in place (unless-check passed)")
        shown = join(args["argv"]) if args["argv"] else args["shell"]
        return Change(f"run: {shown}", self.command_line(args))

    def result_data(self, args: Mapping[str, Any], change: Change, rc: int, stdout: str, stderr: str) -> dict[str, Any]:
        return {
            "rc": rc,
            "stdout": stdout.rstrip("\n"),
            "stderr": stderr.rstrip("\n"),
            "stdout_lines": stdout.splitlines(),
        }


@register
class WaitForModule(Module):
    """Wait until a TCP port accepts connections or a command succeeds (bounded by timeout)."""

    name = "wait_for"
    # read-only, but waits for what earlier changes would have brought up: neither planned nor batched
    batchable = False
    params = {
        "port": Param(int),
        "host": Param(str, default="127.0.0.1"),
        "argv": Param(list),
        "shell": Param(str),
        "timeout": Param(int, default=300),
        "interval": Param((int, float), default=2),
        "msg": Param(str),
    }

    def normalize(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        given = [k for k in ("port", "argv", "shell") if args[k]]
        if len(given) != 1:
            raise RoleError(f"{where}: wait_for needs exactly one of port:, argv:, shell:", hint="e.g. port: 6443")
        if args["argv"]:
            args["argv"] = [str(a) for a in args["argv"]]
        return args

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return set()

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        if args["port"]:
            # host and port are arguments of the bash one-liner, never part of its code
            probe = join(
                [
                    "bash",
                    "-c",
                    '(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null',
                    "kprov-wait",
                    args["host"],
                    str(int(args["port"])),
                ]
            )
            what = f"{args['host']}:{args['port']}"
        else:
            probe = join(args["argv"]) if args["argv"] else f"sh -c {q(args['shell'])}"
            what = join(args["argv"]) if args["argv"] else args["shell"]
        # whole seconds only in sh: give up when the clock is *past* the end, so at least `timeout` seconds pass.
        # The last attempt's output goes to a private mktemp file (a fixed /tmp name is a symlink trap for root).
        script = (
            f"out=$(mktemp) || exit 1\n"
            f"end=$(( $(date +%s) + {int(args['timeout'])} ))\n"
            f'while ! {probe} >"$out" 2>&1 </dev/null; do\n'
            f'  if [ $(date +%s) -gt $end ]; then tail -n 20 "$out" >&2; rm -f "$out";'
            f" echo {q(args['msg'] or 'timed out after ' + str(args['timeout']) + 's waiting for ' + what)} >&2;"
            f" exit 1; fi\n"
            f'  sleep {q(str(args["interval"]))}\ndone\nrm -f "$out"'
        )
        return Change(f"wait for {what}", script, reports_changed=False)


@register
class AssertModule(Module):
    """Fail the host with `msg` unless every expression in `that` holds (evaluated by the engine)."""

    name = "assert"
    batchable = False
    runs_in_check = True
    params = {
        "that": Param((list, str, bool), required=True),
        "msg": Param(str, default="assertion failed"),
        "results": Param(list, internal=True),
    }

    def prepare(self, raw: Mapping[str, Any], r: ArgRenderer) -> dict[str, Any]:
        # the expressions are evaluated here, against the host's variables; check() only reads the results
        that = raw.get("that")
        exprs = that if isinstance(that, list) else [that]
        return {
            "that": exprs,
            "msg": r.render(raw.get("msg", "assertion failed")),
            "results": [(str(e), r.evaluate(e)) for e in exprs],
        }

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return set()

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        failed = [expr for expr, ok in (args["results"] or []) if not ok]
        if failed:
            raise RoleError(args["msg"], hint=f"failed check: {failed[0]}")
        return NoChange("all assertions passed")


@register
class SetFactModule(Module):
    """Set host variables for later tasks and roles (`vars:` mapping, templated)."""

    name = "set_fact"
    batchable = False
    runs_in_check = True
    params = {"vars": Param(dict, required=True)}

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return set()

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        return SetVars(f"set {', '.join(args['vars'])}", vars=dict(args["vars"]))

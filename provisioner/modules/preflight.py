"""host_facts: gather a host's typed HostFacts once (one round trip); preflight_check: one check over them.

    - name: preflight | gather host facts
      host_facts: {}                      # sets the host variable `host_facts` (a HostFacts)
    - name: preflight | enough memory
      preflight_check: {check: memory}    # reads host_facts and the preflight_* variables

The checks themselves are the pure functions of provisioner/facts/checks.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, ClassVar

from provisioner.errors import RoleError
from provisioner.facts.checks import HOST_CHECKS, Node, Requirements, unique_identity
from provisioner.facts.host import HostFacts, host_fact_queries
from provisioner.modules.base import ArgRenderer, Decision, FactQuery, Module, NoChange, Param, SetVars, register

_UNIQUE = "unique"


@register
class HostFactsModule(Module):
    """Gather the host's facts (OS and version, hostname, machine-id, product_uuid, CPUs, memory, cgroup
    version, addresses, MACs, listening ports, kubelet configured?) in one round trip and set them as the
    host variable `host_facts` (a typed HostFacts) for later tasks and roles."""

    name = "host_facts"
    batchable = False
    runs_in_check = True
    params: ClassVar[dict[str, Param]] = {}

    def facts(self, args: Mapping[str, Any]) -> list[FactQuery]:
        return host_fact_queries()

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return set()

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        hf = HostFacts.from_answers(facts)
        return SetVars(
            f"{hf.os_id} {hf.os_version}, {hf.cpus} CPUs, {hf.memory_mb} MiB, cgroup v{hf.cgroup_version}",
            vars={"host_facts": hf},
        )


def _node(view: Mapping[str, Any]) -> Node | None:
    facts = view.get("host_facts")
    if not isinstance(facts, HostFacts):
        return None
    return Node(str(view["name"]), tuple(view.get("roles") or ()), str(view.get("node_ip") or ""), facts)


@register
class PreflightCheckModule(Module):
    """Fail the host when a preflight check finds a problem (`check`: supported_os, node_ip, cpus, memory,
    ports_free, or unique: machine-id, MAC and product_uuid unique among the hosts that gathered facts).
    Reads the `host_facts` of this host (and of every host, for `unique`) and the thresholds from the
    `preflight_*` variables (provisioner.facts.checks.Requirements: `preflight_<field>`)."""

    name = "preflight_check"
    batchable = False
    runs_in_check = True
    params: ClassVar[dict[str, Param]] = {
        "check": Param(str, required=True, choices=(*HOST_CHECKS, _UNIQUE)),
        # filled in by prepare() from the host's variables, not given in the task
        "node": Param(Node, internal=True),
        "peers": Param(list, internal=True),
        "requirements": Param(Requirements, internal=True),
    }

    def prepare(self, raw: Mapping[str, Any], r: ArgRenderer) -> dict[str, Any]:
        hostvars = r.render("{{ hostvars }}")
        me = r.render("{{ inventory_hostname }}")
        view = {**hostvars.get(me, {}), "host_facts": r.render("{{ host_facts | default(none) }}")}
        settings: dict[str, Any] = {}
        for f in fields(Requirements):
            var = f"preflight_{f.name}"
            if r.evaluate(f"{var} is defined"):
                value = r.render("{{ " + var + " }}")
                settings[f.name] = tuple(value) if isinstance(value, list) else value
        try:
            req = Requirements(**settings)
            req = Requirements(**{f.name: _typed(f.name, getattr(req, f.name)) for f in fields(Requirements)})
        except (TypeError, ValueError) as exc:
            raise RoleError(
                f"preflight_check: bad preflight_* setting: {exc}",
                hint="see roles/preflight/defaults.yaml for the expected types",
            ) from None
        return {
            "check": r.render(raw.get("check")),
            "node": _node(view),
            "peers": [n for n in map(_node, hostvars.values()) if n is not None],
            "requirements": req,
        }

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return set()

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        node: Node | None = args["node"]
        if node is None:
            raise RoleError(
                "preflight_check: no host facts gathered on this host",
                hint="run the host_facts module first (roles/preflight)",
            )
        if args["check"] == _UNIQUE:
            problem = unique_identity(node, args["peers"], args["requirements"])
        else:
            problem = HOST_CHECKS[args["check"]](node, args["requirements"])
        if problem:
            raise RoleError(problem, hint=f"preflight check {args['check']!r} failed")
        return NoChange(f"{args['check']}: ok")


def _typed(name: str, value: Any) -> Any:
    if name.startswith(("min_",)):
        return int(value)
    if name.startswith("ports_"):
        return tuple(int(p) for p in value)
    if name == "supported_os":
        return tuple(str(v) for v in value)
    if name == "check_unique_product_uuid":
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
    return value

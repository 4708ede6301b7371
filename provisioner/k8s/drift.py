"""Configuration drift after `kubeadm init`: what kubeadm stored in the cluster vs what kprov would render now.

Pure (no I/O, table-tested). Compared, because kubeadm owns them and `up` never re-applies them to a running
cluster: the API server certificate's SANs, the extra args of the control-plane components and the kube-proxy
settings kprov renders. `kprov upgrade --reconfigure` applies a drift (actions/reconfigure.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from provisioner.errors import InputError

#: ClusterConfiguration sections whose `extraArgs` kprov renders (inventory var in the comment of each)
COMPONENTS = {
    "apiServer": "kubeadm_apiserver_extra_args",
    "controllerManager": "kubeadm_controller_manager_extra_args",
    "scheduler": "kubeadm_scheduler_extra_args",
}
#: args kubeadm's defaulting writes into the stored configuration itself (v1beta2: the API server's
#: authorization mode): absent from what kprov renders, they are not a drift
KUBEADM_DEFAULT_ARGS = {"apiServer": {"authorization-mode": "Node,RBAC"}}


@dataclass(frozen=True)
class DriftItem:
    """One setting that differs: `field` is a dotted path, the values are as YAML would show them."""

    field: str
    stored: str  # in the cluster ('-' when absent)
    wanted: str  # rendered from the inventory ('-' when absent)
    kind: str  # sans | args | kube-proxy

    def line(self) -> str:
        return f"{self.field}: cluster has {self.stored}, inventory wants {self.wanted}"


@dataclass(frozen=True)
class Drift:
    items: tuple[DriftItem, ...] = ()

    @property
    def sans(self) -> bool:
        return any(i.kind == "sans" for i in self.items)

    @property
    def args(self) -> bool:
        return any(i.kind == "args" for i in self.items)

    @property
    def kube_proxy(self) -> bool:
        return any(i.kind == "kube-proxy" for i in self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def normalize_args(raw: Any) -> dict[str, str]:
    """extraArgs as a map: v1beta2/v1beta3 write a map, v1beta4 a [{name, value}] list."""
    if raw is None:
        return {}
    if isinstance(raw, list):
        return {str(a.get("name")): str(a.get("value", "")) for a in raw if isinstance(a, dict)}
    if isinstance(raw, dict):
        return {
            str(k): "" if v is None else (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in raw.items()
        }
    raise InputError(f"unexpected extraArgs {raw!r} in a kubeadm configuration", hint="report this as a kprov bug")


def split_rendered(text: str) -> dict[str, dict[str, Any]]:
    """kprov's rendered kubeadm config (several YAML documents) -> kind -> document."""
    docs = {}
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind"):
            docs[str(doc["kind"])] = doc
    return docs


def _sub(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def cluster_config_drift(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[DriftItem]:
    """SANs and component extra args of two ClusterConfiguration documents (any kubeadm API version)."""
    items: list[DriftItem] = []
    have_sans = [str(s) for s in _sub(stored, "apiServer").get("certSANs") or []]
    want_sans = [str(s) for s in _sub(wanted, "apiServer").get("certSANs") or []]
    if sorted(set(have_sans)) != sorted(set(want_sans)):
        added = [s for s in want_sans if s not in have_sans]
        removed = [s for s in have_sans if s not in want_sans]
        change = ", ".join([f"+{s}" for s in added] + [f"-{s}" for s in removed])
        items.append(DriftItem(f"apiServer.certSANs ({change})", _show(have_sans), _show(want_sans), "sans"))
    for section in COMPONENTS:
        have = normalize_args(_sub(stored, section).get("extraArgs"))
        want = normalize_args(_sub(wanted, section).get("extraArgs"))
        for name in sorted(set(have) | set(want)):
            if name not in want and KUBEADM_DEFAULT_ARGS.get(section, {}).get(name) == have.get(name):
                continue
            if have.get(name) != want.get(name):
                items.append(
                    DriftItem(f"{section}.extraArgs.{name}", _show(have.get(name)), _show(want.get(name)), "args")
                )
    return items


def _differences(stored: Any, wanted: Any, path: str) -> list[tuple[str, Any, Any]]:
    """Where `wanted` (the settings kprov renders) is not what `stored` (the full, defaulted config) has."""
    if isinstance(wanted, dict):
        base = stored if isinstance(stored, dict) else {}
        if not isinstance(stored, dict) and stored is not None:
            return [(path, stored, wanted)]
        out: list[tuple[str, Any, Any]] = []
        for k, v in wanted.items():
            out.extend(_differences(base.get(k), v, f"{path}.{k}" if path else str(k)))
        return out
    return [] if stored == wanted else [(path, stored, wanted)]


def kube_proxy_drift(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[DriftItem]:
    """The kube-proxy settings kprov renders vs the cluster's kube-proxy ConfigMap (config.conf); settings kprov
    does not render are kube-proxy's defaults and not compared."""
    wanted = {k: v for k, v in wanted.items() if k not in ("apiVersion", "kind")}
    return [
        DriftItem(f"kubeProxy.{p}", _show(s), _show(w), "kube-proxy") for p, s, w in _differences(stored, wanted, "")
    ]


def compute_drift(*, stored_cluster_config: str, stored_kube_proxy: str, rendered: str) -> Drift:
    """Drift between the cluster (kube-system/kubeadm-config ClusterConfiguration and kube-system/kube-proxy
    config.conf, as YAML text) and kprov's rendered kubeadm config file."""
    docs = split_rendered(rendered)
    try:
        stored = yaml.safe_load(stored_cluster_config) or {}
        proxy = yaml.safe_load(stored_kube_proxy) or {} if stored_kube_proxy.strip() else {}
    except yaml.YAMLError as exc:
        raise InputError(
            f"cannot parse the cluster's stored configuration: {exc}",
            hint="check kube-system/kubeadm-config and kube-system/kube-proxy (`kubectl -n kube-system get cm`)",
        ) from None
    if not isinstance(stored, dict) or not isinstance(proxy, dict):
        raise InputError(
            "the cluster's stored kubeadm configuration is not a mapping",
            hint="check kube-system/kubeadm-config (`kubectl -n kube-system get cm kubeadm-config -o yaml`)",
        )
    items = cluster_config_drift(stored, docs.get("ClusterConfiguration", {}))
    if proxy and "KubeProxyConfiguration" in docs:
        items += kube_proxy_drift(proxy, docs["KubeProxyConfiguration"])
    return Drift(tuple(items))

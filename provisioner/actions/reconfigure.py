"""Configuration drift and `kprov upgrade --reconfigure` (issue 14 item 3).

kubeadm owns the cluster configuration after `init`: the ClusterConfiguration in kube-system/kubeadm-config,
the API server certificate, the static pod manifests, the kube-proxy ConfigMap. `up` never re-applies them;
this module compares them with what kprov would render now (k8s/drift.py) and applies a drift one control
plane at a time:

  per control plane: the rendered config for that host -> /etc/kubernetes/kprov/kubeadm-reconfigure.yaml;
    SANs changed and the certificate lacks (or still has) one: old apiserver.crt/.key moved aside,
    `kubeadm init phase certs apiserver --config`; extra args changed: `kubeadm init phase control-plane all
    --config` (manifests rewritten); when the certificate or a manifest changed: the control-plane static pods
    restarted one by one (a new stamp in each manifest: actions/static_pods.py) and the API server healthy again;
  then once: `kubeadm init phase upload-config kubeadm --config` (the ConfigMap) and, for a kube-proxy drift,
    `kubeadm init phase addon kube-proxy --config` + a rolling restart of its DaemonSet.

Every step is decided from facts (the certificate's SANs, the manifests' checksums, the stored ConfigMaps), so
a rerun after an interruption continues; a second run finds no drift and changes nothing.

`reconfigure_cluster()` is the command's entry (`kprov upgrade --reconfigure [--yes]`): the version guard, then
the drift alone, or with opts.apply its application under the maintenance locks.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from provisioner.actions._remote import checked, maintenance_lock, session
from provisioner.actions.certs import local_server
from provisioner.actions.static_pods import ADMIN_CONF, MANIFESTS, restart_static_pods
from provisioner.errors import CommandFailed, InputError, KprovError, TaskFailed
from provisioner.inventory.model import Host, Inventory
from provisioner.k8s.drift import Drift, compute_drift, split_rendered
from provisioner.k8s.kubeadm import KUBEADM_CONFIG_GET, parse_kubeadm_config
from provisioner.k8s.kubectl import api_ready
from provisioner.transport.ssh import ConnectOptions, SSHHost

RECONFIGURE_FILE = "/etc/kubernetes/kprov/kubeadm-reconfigure.yaml"
SET_ASIDE_DIR = "/etc/kubernetes/kprov/pki-before-reconfigure"
CONTROL_PLANE_PODS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
KUBEADM_TEMPLATE = "control_plane/kubeadm-config.yaml.j2"


@dataclass(frozen=True)
class ReconfigureOptions:
    extra_vars: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    timeout_s: int = 300
    apply: bool = False  # False: the drift is only probed and returned, nothing changed (no --yes)


@dataclass(frozen=True)
class HostStep:
    host: str
    actions: tuple[str, ...]  # what was done there ('' when the facts said nothing was needed)
    seconds: float


@dataclass(frozen=True)
class ReconfigureReport:
    drift: Drift
    steps: tuple[HostStep, ...] = ()
    cluster_actions: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class ReconfigureOutcome:
    """The drift (None: the first control plane is not initialised) and, with opts.apply, the report."""

    drift: Drift | None
    report: ReconfigureReport | None = None


def reconfigure_cluster(
    inv: Inventory, connect: ConnectOptions, opts: ReconfigureOptions, progress: Callable[[str], None] = lambda _m: None
) -> ReconfigureOutcome:
    """`kprov upgrade --reconfigure`: refused (InputError) when a control plane runs another version than the
    inventory (the configuration is rendered for the inventory's version: `kprov upgrade` first); without
    opts.apply only the drift; with it, reconfigure() under the locks `up` takes."""
    from provisioner.actions.versions import guard_version_unchanged

    guard_version_unchanged(inv, inv.control_planes, connect)
    if not opts.apply:
        return ReconfigureOutcome(probe_drift(inv, connect, opts.extra_vars))
    with maintenance_lock(inv, connect, "kprov upgrade --reconfigure"):
        report = reconfigure(inv, connect, opts, progress=progress)
    return ReconfigureOutcome(report.drift, report)


# --- rendering: what kprov would write for `kubeadm init` on a control plane ------------------------------


def render_kubeadm_config(inv: Inventory, host: Host, extra_vars: Mapping[str, Any] | None = None) -> str:
    """The control_plane role's kubeadm config for `host`, rendered here with the role's variables (defaults <
    cluster-wide < inventory < -e), exactly as `up` writes it (no host is asked anything)."""
    from provisioner.engine.roles import TEMPLATES_DIR, load_role
    from provisioner.engine.templating import Renderer, make_env
    from provisioner.engine.vars import merge_host_vars
    from provisioner.k8s.context import cluster_vars
    from provisioner.secrets import Redactor

    env = make_env(TEMPLATES_DIR)
    role = load_role("control_plane")
    # the bundle's variables do not reach the kubeadm config: skip hashing the bundle
    light = dataclasses.replace(inv, cluster=dataclasses.replace(inv.cluster, kubernetes_source="pkgs"))
    base = cluster_vars(light, Redactor())
    variables = merge_host_vars(
        env,
        inv,
        host,
        role_name=role.name,
        role_defaults=role.defaults,
        base_vars=base,
        extra_vars=dict(extra_vars or {}),
        run_vars={},
        all_run_vars={},
        check=True,
    )
    return Renderer(env, variables, f"{host.name}: {KUBEADM_TEMPLATE}").render_file(KUBEADM_TEMPLATE)


# --- facts ----------------------------------------------------------------------------------------------


def stored_config(ssh: SSHHost) -> tuple[str, str]:
    """(ClusterConfiguration, kube-proxy config.conf) as kubeadm stored them in kube-system."""
    kubeadm = checked(
        ssh,
        ssh.run(["kubectl", "--kubeconfig", ADMIN_CONF, *KUBEADM_CONFIG_GET], timeout=120),
        "kubectl -n kube-system get configmap kubeadm-config",
        hint="is the API server healthy? (`kprov status`)",
    )
    res = ssh.run(
        ["kubectl", "--kubeconfig", ADMIN_CONF, "-n", "kube-system", "get", "configmap", "kube-proxy", "-o", "json"],
        timeout=120,
    )
    proxy = json.loads(res.stdout).get("data", {}).get("config.conf", "") if res.rc == 0 else ""
    return parse_kubeadm_config(kubeadm.stdout).cluster_configuration, proxy


def initialised(ssh: SSHHost) -> bool:
    return ssh.run(["test", "-e", ADMIN_CONF], timeout=30).rc == 0


def probe_drift(inv: Inventory, connect: ConnectOptions, extra_vars: Mapping[str, Any] | None = None) -> Drift | None:
    """The drift between the running cluster and the inventory; None when the first control plane is not
    initialised yet (nothing to compare: `up` will init it with the inventory's configuration)."""
    cp1 = inv.control_planes[0]
    rendered = render_kubeadm_config(inv, cp1, extra_vars)
    with session(cp1, connect) as ssh:
        if not initialised(ssh):
            return None
        cluster_config, proxy = stored_config(ssh)
    return compute_drift(stored_cluster_config=cluster_config, stored_kube_proxy=proxy, rendered=rendered)


def cert_sans(pem: bytes) -> set[str]:
    """DNS names and IP addresses of a PEM certificate's subjectAltName (pure)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


def needs_new_certificate(have: set[str], stored_sans: list[str], wanted_sans: list[str]) -> bool:
    """The certificate lacks a wanted SAN, or still carries one the inventory removed."""
    norm = {_norm(s) for s in have}
    removed = {_norm(s) for s in stored_sans} - {_norm(s) for s in wanted_sans}
    return any(_norm(s) not in norm for s in wanted_sans) or bool(removed & norm)


def _norm(name: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower().rstrip(".")


# --- applying --------------------------------------------------------------------------------------------


def _manifests_sum(ssh: SSHHost) -> str:
    files = " ".join(shlex.quote(f"{MANIFESTS}/{p}.yaml") for p in CONTROL_PLANE_PODS)
    return ssh.script(f"cat {files} 2>/dev/null | sha256sum", timeout=60).stdout.strip()


def _put_config(ssh: SSHHost, text: str) -> None:
    script = (
        f"umask 077 && mkdir -p /etc/kubernetes/kprov && cat > {RECONFIGURE_FILE}.tmp && "
        f"mv {RECONFIGURE_FILE}.tmp {RECONFIGURE_FILE}"
    )
    checked(ssh, ssh.run(["sh", "-c", script], stdin=text.encode(), timeout=60), f"writing {RECONFIGURE_FILE}")


def reconfigure_host(
    inv: Inventory,
    host: Host,
    connect: ConnectOptions,
    drift: Drift,
    stored_sans: list[str],
    opts: ReconfigureOptions,
    progress: Callable[[str], None],
) -> HostStep:
    """One control plane: new API server certificate and/or manifests as the facts require, then restarted."""
    t0 = time.monotonic()
    rendered = render_kubeadm_config(inv, host, opts.extra_vars)
    wanted = [
        str(s)
        for s in (split_rendered(rendered).get("ClusterConfiguration", {}).get("apiServer") or {}).get("certSANs") or []
    ]
    actions: list[str] = []
    with session(host, connect) as ssh:
        _put_config(ssh, rendered)
        before = _manifests_sum(ssh)
        new_cert = False
        if drift.sans:
            have = cert_sans(ssh.fetch("/etc/kubernetes/pki/apiserver.crt"))
            if needs_new_certificate(have, stored_sans, wanted):
                aside = f"{SET_ASIDE_DIR}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
                progress(f"{host.name}: new API server certificate (old one kept in {aside})")
                checked(
                    ssh,
                    ssh.script(
                        f"set -e\numask 077\nmkdir -p {aside}\n"
                        f"mv /etc/kubernetes/pki/apiserver.crt /etc/kubernetes/pki/apiserver.key {aside}/\n"
                        f"kubeadm init phase certs apiserver --config {RECONFIGURE_FILE} || "
                        f"{{ rc=$?; cp -p {aside}/apiserver.crt {aside}/apiserver.key /etc/kubernetes/pki/; exit $rc; }}\n",
                        timeout=180,
                    ),
                    "kubeadm init phase certs apiserver",
                    hint=f"the old certificate is back in place; see the error above on {host.name}",
                )
                actions.append("apiserver certificate")
                new_cert = True
        if drift.args:
            progress(f"{host.name}: control-plane manifests with the new extra args")
            checked(
                ssh,
                ssh.run(
                    ["kubeadm", "init", "phase", "control-plane", "all", "--config", RECONFIGURE_FILE], timeout=180
                ),
                "kubeadm init phase control-plane all",
            )
        changed = _manifests_sum(ssh) != before
        if changed:
            actions.append("static pod manifests")
        if new_cert or changed:
            restart_static_pods(
                ssh, local_server(host), pods=CONTROL_PLANE_PODS, timeout_s=opts.timeout_s, progress=progress
            )
            actions.append("static pods restarted")
    return HostStep(host.name, tuple(actions), round(time.monotonic() - t0, 1))


def reconfigure(
    inv: Inventory, connect: ConnectOptions, opts: ReconfigureOptions, progress: Callable[[str], None] = lambda _m: None
) -> ReconfigureReport:
    """Apply the drift, one control plane at a time, then the ConfigMaps. Nothing is changed when there is no
    drift; a cluster whose control planes are not all healthy is refused (InputError) before any change."""
    t0 = time.monotonic()
    cps = inv.control_planes
    cp1 = cps[0]
    for h in cps:
        try:
            with session(h, connect) as ssh:
                ready = api_ready(ssh, local_server(h), ADMIN_CONF)
        except KprovError as exc:
            raise InputError(
                f"{h.name}: {exc.message}: nothing reconfigured",
                hint="every control plane must be reachable and healthy (`kprov status`)",
            ) from None
        if not ready:
            raise InputError(
                f"{h.name}: API server (or its etcd) not ready: nothing reconfigured",
                hint="a reconfiguration starts from a healthy control plane: check it (`kprov status`)",
            )
    drift = probe_drift(inv, connect, opts.extra_vars)
    if drift is None:
        raise InputError(
            f"{cp1.name} is not initialised: nothing to reconfigure",
            hint=f"`kprov up -i {inv.path}` builds the cluster with the inventory's configuration",
        )
    if not drift:
        return ReconfigureReport(drift, seconds=round(time.monotonic() - t0, 1))
    with session(cp1, connect) as ssh:
        stored_text, _proxy = stored_config(ssh)
    import yaml

    stored_sans = [str(s) for s in ((yaml.safe_load(stored_text) or {}).get("apiServer") or {}).get("certSANs") or []]
    steps = []
    for h in cps:
        steps.append(reconfigure_host(inv, h, connect, drift, stored_sans, opts, progress))
    cluster_actions: list[str] = []
    with session(cp1, connect) as ssh:
        _put_config(ssh, render_kubeadm_config(inv, cp1, opts.extra_vars))
        if drift.sans or drift.args:
            progress("kube-system/kubeadm-config: the new ClusterConfiguration")
            checked(
                ssh,
                ssh.run(
                    ["kubeadm", "init", "phase", "upload-config", "kubeadm", "--config", RECONFIGURE_FILE], timeout=180
                ),
                "kubeadm init phase upload-config kubeadm",
            )
            cluster_actions.append("kubeadm-config ConfigMap")
        if drift.kube_proxy:
            progress("kube-proxy: ConfigMap and DaemonSet, then its pods restarted")
            checked(
                ssh,
                ssh.run(["kubeadm", "init", "phase", "addon", "kube-proxy", "--config", RECONFIGURE_FILE], timeout=180),
                "kubeadm init phase addon kube-proxy",
            )
            k = ["kubectl", "--kubeconfig", ADMIN_CONF, "-n", "kube-system"]
            checked(
                ssh, ssh.run([*k, "rollout", "restart", "daemonset/kube-proxy"], timeout=120), "restarting kube-proxy"
            )
            checked(
                ssh,
                ssh.run(
                    [*k, "rollout", "status", "daemonset/kube-proxy", f"--timeout={opts.timeout_s}s"],
                    timeout=opts.timeout_s + 60,
                ),
                "kube-proxy rollout",
                hint="`kubectl -n kube-system get pods -l k8s-app=kube-proxy` shows the pods that did not start",
            )
            cluster_actions.append("kube-proxy ConfigMap + pods restarted")
    left = probe_drift(inv, connect, opts.extra_vars)
    if left:
        raise TaskFailed(
            f"drift remains after the reconfiguration: {left.items[0].line()}",
            hint="see the steps above; rerun `kprov upgrade --reconfigure --yes` (it resumes)",
        )
    return ReconfigureReport(drift, tuple(steps), tuple(cluster_actions), round(time.monotonic() - t0, 1))


def drift_notice(inv: Inventory, connect: ConnectOptions, extra_vars: Mapping[str, Any] | None = None) -> Drift | None:
    """For `up`/`plan`: the drift of a running cluster, or None when it cannot be known (not initialised yet,
    unreachable, API down: the run itself reports those)."""
    try:
        return probe_drift(inv, connect, extra_vars)
    except (CommandFailed, KprovError, ValueError):
        return None


def drift_warnings(inv: Inventory, connect: ConnectOptions, extra_vars: Mapping[str, Any] | None = None) -> list[str]:
    """What `up`/`plan` say about a drift (they never apply it: only `upgrade --reconfigure` does, whole)."""
    drift = drift_notice(inv, connect, extra_vars)
    if not drift:
        return []
    lines = [f"configuration drift on cluster {inv.cluster.name}: {item.line()}" for item in drift.items]
    lines.append(
        f"up does not apply configuration drift: run `kprov upgrade --reconfigure -i {inv.path}` to see it "
        "and with --yes to apply it (one control plane at a time)"
    )
    return lines

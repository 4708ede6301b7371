"""Golden files for every template, plus the semantics each rendered file must have.

Regenerate after an intended change:  KPROV_UPDATE_GOLDEN=1 pytest tests/golden
then review `git diff tests/golden/expected`.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from typing import Any

import pytest
from jinja2 import meta

from tests.golden.cases import (
    CASES,
    ENV,
    EXPECTED,
    HA_CERT_KEY,
    HOSTS,
    JOIN_TOKEN,
    TEMPLATES,
    Case,
    by_kind,
    cases_for,
    docs,
    host_vars,
    ids,
    render,
)

UPDATE = os.environ.get("KPROV_UPDATE_GOLDEN") == "1"
V1BETA2, V1BETA3, V1BETA4 = (f"kubeadm.k8s.io/v1beta{n}" for n in (2, 3, 4))


def expected_api(k8s: str) -> str:
    minor = tuple(int(x) for x in k8s.split(".")[:2])
    return V1BETA2 if minor < (1, 22) else V1BETA3 if minor < (1, 31) else V1BETA4


# --- golden files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_golden(case: Case) -> None:
    actual = render(case)
    path = case.expected_path
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    if not path.exists():
        pytest.fail(f"no golden file {path.relative_to(EXPECTED.parent)}; create it with KPROV_UPDATE_GOLDEN=1")
    expected = path.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True),
                actual.splitlines(True),
                fromfile=f"expected/{case.name}/{case.output_name}",
                tofile="rendered",
            )
        )
        pytest.fail(
            f"rendered output differs from the golden file (KPROV_UPDATE_GOLDEN=1 to accept):\n{diff}", pytrace=False
        )


def test_no_stale_golden_files() -> None:
    wanted = {c.expected_path for c in CASES}
    stale = sorted(str(p.relative_to(EXPECTED)) for p in EXPECTED.rglob("*") if p.is_file() and p not in wanted)
    if UPDATE:
        for rel in stale:
            (EXPECTED / rel).unlink()
        return
    assert not stale, f"golden files without a case (delete them or KPROV_UPDATE_GOLDEN=1): {stale}"


def test_every_template_has_a_case() -> None:
    templates = {
        str(p.relative_to(TEMPLATES))
        for p in TEMPLATES.rglob("*.j2")
        if not p.name.startswith("_") and "_lib" not in p.parts
    }
    assert templates - {c.template for c in CASES} == set()


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_uses_only_contract_variables(case: Case) -> None:
    """A template reads only the engine's and the contract's variables, and never prints a null."""
    source = ENV.loader.get_source(ENV, case.template)[0]
    used = meta.find_undeclared_variables(ENV.parse(source))
    assert used <= set(case.vars), f"variables outside the contract: {sorted(used - set(case.vars))}"
    text = render(case)
    assert "None" not in text, "a null variable leaked into the output"
    assert text.endswith("\n") and not text.endswith("\n\n"), "exactly one trailing newline"


# --- every output parses ---------------------------------------------------------------------------


def parse(case: Case, text: str) -> Any:
    name = case.output_name
    if name.endswith((".yaml", ".yml")):
        return docs(text)
    if name.endswith(".toml"):
        return tomllib.loads(text)
    if name.endswith(".conflist"):
        return json.loads(text)
    return text


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_output_parses(case: Case) -> None:
    parse(case, render(case))


# --- containerd ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", cases_for("containerd/config.toml.j2"), ids=ids(cases_for("containerd/config.toml.j2"))
)
def test_containerd_config(case: Case) -> None:
    v = case.vars
    cfg = tomllib.loads(render(case))
    plugins = cfg["plugins"]
    if v["containerd_major"] >= 2:
        assert cfg["version"] == 3
        assert "io.containerd.grpc.v1.cri" not in plugins
        images, runtime = plugins["io.containerd.cri.v1.images"], plugins["io.containerd.cri.v1.runtime"]
        assert images["pinned_images"]["sandbox"] == v["containerd_sandbox_image"]
        assert images["registry"]["config_path"] == v["containerd_registry_config_path"]
        assert images["snapshotter"] == v["containerd_snapshotter"]
        cni, ctrd = runtime["cni"], runtime["containerd"]
        if v["containerd_minor"] >= 1:
            assert cni["bin_dirs"] == [v["containerd_cni_bin_dir"]] and "bin_dir" not in cni
        else:
            assert cni["bin_dir"] == v["containerd_cni_bin_dir"] and "bin_dirs" not in cni
    else:
        assert cfg["version"] == 2
        assert not any(k.startswith("io.containerd.cri.v1") for k in plugins)
        runtime = plugins["io.containerd.grpc.v1.cri"]
        assert runtime["sandbox_image"] == v["containerd_sandbox_image"]
        assert runtime["registry"]["config_path"] == v["containerd_registry_config_path"]
        cni, ctrd = runtime["cni"], runtime["containerd"]
        assert ctrd["snapshotter"] == v["containerd_snapshotter"]
        assert cni["bin_dir"] == v["containerd_cni_bin_dir"]
    assert cni["conf_dir"] == v["containerd_cni_conf_dir"]
    assert runtime["restrict_oom_score_adj"] is v["containerd_restrict_oom_score_adj"]
    runc = ctrd["runtimes"]["runc"]
    assert ctrd["default_runtime_name"] == "runc"
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is v["containerd_systemd_cgroup"]


@pytest.mark.parametrize("case", cases_for("containerd/hosts.toml.j2"), ids=ids(cases_for("containerd/hosts.toml.j2")))
def test_hosts_toml(case: Case) -> None:
    item = case.vars["item"]
    cfg = tomllib.loads(render(case))
    expected_server = {"docker.io": "https://registry-1.docker.io", "_default": None}.get(
        item["registry"], f"https://{item['registry']}"
    )
    assert cfg.get("server") == expected_server
    assert list(cfg.get("host", {})) == item["mirrors"], "one [host] per mirror, in order"
    for host in cfg.get("host", {}).values():
        assert host["capabilities"] == ["pull", "resolve"]


def test_crictl() -> None:
    (case,) = cases_for("containerd/crictl.yaml.j2")
    (cfg,) = docs(render(case))
    assert cfg["runtime-endpoint"] == cfg["image-endpoint"] == case.vars["containerd_socket"]


# --- kubelet ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", cases_for("kubernetes/10-kubeadm.conf.j2"), ids=ids(cases_for("kubernetes/10-kubeadm.conf.j2"))
)
def test_kubeadm_dropin(case: Case) -> None:
    lines = render(case).splitlines()
    assert lines[-2:] == [
        "ExecStart=",
        f"ExecStart={case.vars['kubelet_bin']} $KUBELET_KUBECONFIG_ARGS "
        "$KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS",
    ]
    assert "EnvironmentFile=-/etc/default/kubelet" in lines
    assert "EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env" in lines


@pytest.mark.parametrize(
    "case", cases_for("kubernetes/kubelet-default.j2"), ids=ids(cases_for("kubernetes/kubelet-default.j2"))
)
def test_kubelet_default(case: Case) -> None:
    settings = [line for line in render(case).splitlines() if line and not line.startswith("#")]
    assert len(settings) == 1
    key, _, value = settings[0].partition("=")
    assert key == "KUBELET_EXTRA_ARGS"
    assert value.split(" ") == [f"--node-ip={case.vars['host']['node_ip']}", *case.vars["kubelet_extra_args"]]


# --- kubeadm ---------------------------------------------------------------------------------------

KUBEADM_CASES = cases_for("control_plane/kubeadm-config.yaml.j2")
JOIN_CASES = cases_for("join/kubeadm-join.yaml.j2")


def _args(value: Any, api: str) -> dict[str, str]:
    """extraArgs/kubeletExtraArgs as a dict, asserting the style the API version requires."""
    if api == V1BETA4:
        assert isinstance(value, list), f"{api} needs list-style args, got {value!r}"
        assert all(set(a) == {"name", "value"} for a in value)
        pairs = [(a["name"], a["value"]) for a in value]
    else:
        assert isinstance(value, dict), f"{api} needs map-style args, got {value!r}"
        pairs = list(value.items())
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in pairs), "args are strings"
    return dict(pairs)


def _as_args(d: dict[str, Any]) -> dict[str, str]:
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in d.items()}


@pytest.mark.parametrize("case", KUBEADM_CASES, ids=ids(KUBEADM_CASES))
def test_kubeadm_init_config(case: Case) -> None:
    v, text = case.vars, render(case)
    api = expected_api(case.k8s)
    kinds = by_kind(text)
    assert list(kinds) == [
        "InitConfiguration",
        "ClusterConfiguration",
        "KubeletConfiguration",
        "KubeProxyConfiguration",
    ]
    init, cluster = kinds["InitConfiguration"], kinds["ClusterConfiguration"]
    assert init["apiVersion"] == cluster["apiVersion"] == api

    assert init["localAPIEndpoint"] == {"advertiseAddress": v["host"]["node_ip"], "bindPort": 6443}
    reg = init["nodeRegistration"]
    assert reg["name"] == v["host"]["name"] and reg["criSocket"] == v["kubeadm_cri_socket"]
    assert _args(reg["kubeletExtraArgs"], api) == {"node-ip": v["host"]["node_ip"]}
    if v["kubeadm_node_taints"] is None:
        assert "taints" not in reg, "null taints = kubeadm's default control-plane taint"
    else:
        assert reg["taints"] == v["kubeadm_node_taints"]
    assert reg.get("ignorePreflightErrors", []) == v["kubeadm_ignore_preflight_errors"]
    if api == V1BETA2:
        assert "skipPhases" not in init, "v1beta2 has no skipPhases: the role passes --skip-phases"
    else:
        assert init.get("skipPhases", []) == v["kubeadm_skip_phases"]
    # never in the init config, HA or not: a per-run secret there would rewrite the file on every `up`;
    # the join role uploads the certificates with the run's key right before each control-plane join
    assert "certificateKey" not in init and HA_CERT_KEY not in text

    assert cluster["kubernetesVersion"] == "v" + case.k8s
    assert cluster["clusterName"] == v["cluster"]["name"]
    assert cluster.get("controlPlaneEndpoint") == v["kubeadm_control_plane_endpoint"]
    assert cluster.get("imageRepository") == v["kubeadm_image_repository"]
    assert cluster["networking"] == {
        "podSubnet": v["cluster"]["pod_cidr"],
        "serviceSubnet": v["cluster"]["service_cidr"],
    }
    assert cluster.get("apiServer", {}).get("certSANs", []) == v["kubeadm_cert_sans"]
    for section, var in (
        ("apiServer", "kubeadm_apiserver_extra_args"),
        ("controllerManager", "kubeadm_controller_manager_extra_args"),
        ("scheduler", "kubeadm_scheduler_extra_args"),
    ):
        if v[var]:
            assert _args(cluster[section]["extraArgs"], api) == _as_args(v[var])
        else:
            assert "extraArgs" not in cluster.get(section, {})
    assert cluster.get("etcd", {}).get("local", {}).get("imageTag") == v["kubeadm_etcd_image_tag"]
    assert cluster.get("dns", {}).get("imageTag") == v["kubeadm_coredns_image_tag"]

    kubelet, proxy = kinds["KubeletConfiguration"], kinds["KubeProxyConfiguration"]
    assert kubelet == {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": v["kubelet_cgroup_driver"],
        **v["kubelet_extra_config"],
    }
    assert proxy == {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": v["kube_proxy_mode"],
        "clusterCIDR": v["cluster"]["pod_cidr"],
        **v["kube_proxy_extra_config"],
    }


@pytest.mark.parametrize("case", JOIN_CASES, ids=ids(JOIN_CASES))
def test_kubeadm_join_config(case: Case) -> None:
    v, text = case.vars, render(case)
    api = expected_api(case.k8s)
    (join,) = docs(text)
    assert join["apiVersion"] == api and join["kind"] == "JoinConfiguration"
    assert join["discovery"] == {
        "bootstrapToken": {
            "apiServerEndpoint": v["join_api_endpoint"],
            "token": v["join_token"],
            "caCertHashes": [v["join_ca_cert_hash"]],
        }
    }
    assert text.count(JOIN_TOKEN) == 1, "the token is rendered only in discovery.bootstrapToken.token"
    reg = join["nodeRegistration"]
    assert reg["name"] == v["host"]["name"] and reg["criSocket"] == v["kubeadm_cri_socket"]
    assert _args(reg["kubeletExtraArgs"], api) == {"node-ip": v["host"]["node_ip"]}
    assert reg.get("ignorePreflightErrors", []) == v["kubeadm_ignore_preflight_errors"]
    if v["join_control_plane"]:
        assert join["controlPlane"] == {
            "localAPIEndpoint": {"advertiseAddress": v["host"]["node_ip"], "bindPort": 6443},
            "certificateKey": v["join_certificate_key"],
        }
        assert text.count(v["join_certificate_key"]) == 1
    else:
        assert "controlPlane" not in join and HA_CERT_KEY not in text


@pytest.mark.parametrize(
    "template, secret_vars",
    [
        (
            "control_plane/kubeadm-config.yaml.j2",
            {"kubeadm_upload_certs": True, "kubeadm_certificate_key": HA_CERT_KEY},
        ),
        (
            "join/kubeadm-join.yaml.j2",
            {"join_token": JOIN_TOKEN, "join_control_plane": True, "join_certificate_key": HA_CERT_KEY},
        ),
    ],
)
def test_kubeadm_reveals_secret_objects(template: str, secret_vars: dict[str, str]) -> None:
    """Secret-wrapped values render as their value (str(Secret) is the mask) and give the same file."""
    from provisioner.secrets import MASK, Secret

    plain = ENV.get_template(template).render(**host_vars(**secret_vars))
    wrapped = ENV.get_template(template).render(
        **host_vars(**{k: Secret(v) if isinstance(v, str) else v for k, v in secret_vars.items()})
    )
    assert wrapped == plain and MASK not in wrapped


# Known fields of the kubeadm config types (kubeadm's apis/kubeadm/v1beta{2,3,4}/types.go), for the parts
# kprov writes: kubeadm 1.29+ is not available here to decode v1beta3/v1beta4 configs, so a typo in a field
# name would otherwise only show up on a real `kubeadm init`.
_BASE = {
    "InitConfiguration": {
        "apiVersion",
        "kind",
        "bootstrapTokens",
        "nodeRegistration",
        "localAPIEndpoint",
        "certificateKey",
    },
    "ClusterConfiguration": {
        "apiVersion",
        "kind",
        "etcd",
        "networking",
        "kubernetesVersion",
        "controlPlaneEndpoint",
        "apiServer",
        "controllerManager",
        "scheduler",
        "dns",
        "certificatesDir",
        "imageRepository",
        "featureGates",
        "clusterName",
    },
    "JoinConfiguration": {"apiVersion", "kind", "nodeRegistration", "caCertPath", "discovery", "controlPlane"},
    "nodeRegistration": {"name", "criSocket", "taints", "kubeletExtraArgs", "ignorePreflightErrors"},
    "localAPIEndpoint": {"advertiseAddress", "bindPort"},
    "networking": {"serviceSubnet", "podSubnet", "dnsDomain"},
    "apiServer": {"extraArgs", "extraVolumes", "certSANs", "timeoutForControlPlane"},
    "controllerManager": {"extraArgs", "extraVolumes"},
    "scheduler": {"extraArgs", "extraVolumes"},
    "etcd": {"local", "external"},
    "local": {"imageRepository", "imageTag", "dataDir", "extraArgs", "serverCertSANs", "peerCertSANs"},
    "dns": {"imageRepository", "imageTag"},
    "discovery": {"bootstrapToken", "file", "tlsBootstrapToken", "timeout"},
    "bootstrapToken": {"token", "apiServerEndpoint", "caCertHashes", "unsafeSkipCAVerification"},
    "controlPlane": {"localAPIEndpoint", "certificateKey"},
}


def _fields(api: str) -> dict[str, set[str]]:
    f = {k: set(v) for k, v in _BASE.items()}
    if api == V1BETA2:
        f["ClusterConfiguration"].add("useHyperKubeImage")
        f["dns"].add("type")
    else:
        f["InitConfiguration"] |= {"skipPhases", "patches"}
        f["JoinConfiguration"] |= {"skipPhases", "patches"}
        f["nodeRegistration"].add("imagePullPolicy")
    if api == V1BETA4:
        f["InitConfiguration"] |= {"dryRun", "timeouts"}
        f["JoinConfiguration"] |= {"dryRun", "timeouts"}
        f["ClusterConfiguration"] |= {
            "proxy",
            "encryptionAlgorithm",
            "certificateValidityPeriod",
            "caCertificateValidityPeriod",
        }
        f["nodeRegistration"].add("imagePullSerial")
        f["apiServer"] = (f["apiServer"] - {"timeoutForControlPlane"}) | {"extraEnvs"}
        f["controllerManager"].add("extraEnvs")
        f["scheduler"].add("extraEnvs")
        f["local"].add("extraEnvs")
        f["dns"].add("disabled")
        f["discovery"].discard("timeout")
    return f


def _unknown_fields(value: Any, name: str, fields: dict[str, set[str]], path: str) -> list[str]:
    if not isinstance(value, dict) or name not in fields:
        return []
    found = [f"{path}.{k}" for k in value if k not in fields[name]]
    for key, child in value.items():
        found += _unknown_fields(child, key, fields, f"{path}.{key}")
    return found


@pytest.mark.parametrize("case", KUBEADM_CASES + JOIN_CASES, ids=ids(KUBEADM_CASES + JOIN_CASES))
def test_kubeadm_known_fields(case: Case) -> None:
    api = expected_api(case.k8s)
    for doc in docs(render(case)):
        if doc["apiVersion"].startswith("kubeadm.k8s.io/"):
            assert _unknown_fields(doc, doc["kind"], _fields(api), doc["kind"]) == []


def test_kubeadm_known_fields_catches_typos() -> None:
    doc = {"kind": "ClusterConfiguration", "apiServer": {"certSans": []}, "networking": {"podSubnet": "x"}}
    assert _unknown_fields(doc, "ClusterConfiguration", _fields(V1BETA4), "c") == ["c.apiServer.certSans"]
    init = {"kind": "InitConfiguration", "skipPhases": ["preflight"]}
    assert _unknown_fields(init, "InitConfiguration", _fields(V1BETA2), "i") == ["i.skipPhases"]


@pytest.mark.parametrize(
    "k8s, api",
    [
        ("1.20.2", V1BETA2),
        ("1.21.14", V1BETA2),
        ("1.22.0", V1BETA3),
        ("1.29.10", V1BETA3),
        ("1.30.14", V1BETA3),
        ("1.31.0", V1BETA4),
        ("1.34.1", V1BETA4),
        ("1.35.0", V1BETA4),
    ],
)
@pytest.mark.parametrize("template", ["control_plane/kubeadm-config.yaml.j2", "join/kubeadm-join.yaml.j2"])
def test_kubeadm_api_version_boundaries(template: str, k8s: str, api: str) -> None:
    text = ENV.get_template(template).render(**host_vars(k8s=k8s, kubeadm_apiserver_extra_args={"v": 2}))
    versions = {d["apiVersion"] for d in docs(text) if d["apiVersion"].startswith("kubeadm.k8s.io/")}
    assert versions == {api}
    engine_filter = ENV.filters.get("kubeadm_api_version")
    if engine_filter is not None:  # the engine's own helper, when it has one, must agree
        assert engine_filter(k8s) == api


# --- CNI -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases_for("cni/bridge.conflist.j2"), ids=ids(cases_for("cni/bridge.conflist.j2")))
def test_bridge_conflist(case: Case) -> None:
    v = case.vars
    conf = json.loads(render(case))
    assert conf["cniVersion"] == v["cni_bridge_cni_version"]
    bridge, portmap = conf["plugins"]
    assert (bridge["type"], bridge["bridge"]) == ("bridge", v["cni_bridge_name"])
    assert bridge["isGateway"] and bridge["ipMasq"] and bridge["hairpinMode"]
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": v["cni_bridge_subnet"]}]]
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}


@pytest.mark.parametrize("case", cases_for("cni/flannel.yaml.j2"), ids=ids(cases_for("cni/flannel.yaml.j2")))
def test_flannel_manifest(case: Case) -> None:
    v = case.vars
    objects = docs(render(case))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Namespace", "kube-flannel"),
        ("ServiceAccount", "flannel"),
        ("ClusterRole", "flannel"),
        ("ClusterRoleBinding", "flannel"),
        ("ConfigMap", "kube-flannel-cfg"),
        ("DaemonSet", "kube-flannel-ds"),
    ]
    cm, ds = objects[4], objects[5]
    net = json.loads(cm["data"]["net-conf.json"])
    assert net["Network"] == v["cluster"]["pod_cidr"] and net["Backend"] == {"Type": v["flannel_backend"]}
    cni = json.loads(cm["data"]["cni-conf.json"])
    assert [p["type"] for p in cni["plugins"]] == ["flannel", "portmap"]
    spec = ds["spec"]["template"]["spec"]
    (flanneld,) = spec["containers"]
    ifaces = [a.removeprefix("--iface=") for a in flanneld["args"] if a.startswith("--iface=")]
    assert ifaces == v["flannel_ifaces"], "one --iface per node IP, in order"
    assert flanneld["image"] == v["flannel_image"]
    plugin, install = spec["initContainers"]
    assert (plugin["name"], plugin["image"]) == ("install-cni-plugin", v["flannel_cni_plugin_image"])
    assert (install["name"], install["image"]) == ("install-cni", v["flannel_image"])
    volumes = {vol["name"]: vol for vol in spec["volumes"]}
    assert volumes["cni-plugin"]["hostPath"]["path"] == v["flannel_cni_bin_dir"]
    for container in spec["initContainers"] + spec["containers"]:
        assert {m["name"] for m in container["volumeMounts"]} <= set(volumes)


def test_flannel_ifaces_cover_every_node() -> None:
    (case,) = [c for c in cases_for("cni/flannel.yaml.j2") if c.name == "flannel-5-nodes"]
    text = render(case)
    for h in HOSTS:
        assert text.count(f"--iface={h['node_ip']}") == 1


@pytest.mark.parametrize(
    "case", cases_for("cni/calico-resources.yaml.j2"), ids=ids(cases_for("cni/calico-resources.yaml.j2"))
)
def test_calico_resources(case: Case) -> None:
    v = case.vars
    kinds = by_kind(render(case))
    assert set(kinds) == {"Installation", "APIServer"}
    assert all(
        d["apiVersion"] == "operator.tigera.io/v1" and d["metadata"]["name"] == "default" for d in kinds.values()
    )
    (pool,) = kinds["Installation"]["spec"]["calicoNetwork"]["ipPools"]
    assert pool["cidr"] == v["cluster"]["pod_cidr"]
    assert pool["encapsulation"] == v["calico_encapsulation"]
    # the operator's enum (operator.tigera.io/v1 IPPool.encapsulation); its CRDs are not available offline
    assert pool["encapsulation"] in {"IPIP", "IPIPCrossSubnet", "VXLAN", "VXLANCrossSubnet", "None"}
    network = kinds["Installation"]["spec"]["calicoNetwork"]
    assert network["nodeAddressAutodetectionV4"] == {"kubernetes": "NodeInternalIP"}, "multi-NIC: kubelet's node IP"
    assert (pool["natOutgoing"], pool["nodeSelector"]) == ("Enabled", "all()")


# --- smoke -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases_for("smoke/hello.yaml.j2"), ids=ids(cases_for("smoke/hello.yaml.j2")))
def test_smoke_manifest(case: Case) -> None:
    v = case.vars
    kinds = by_kind(render(case))
    assert list(kinds) == ["Namespace", "Deployment", "Service"]
    assert kinds["Namespace"]["metadata"]["name"] == v["smoke_namespace"]
    deploy, svc = kinds["Deployment"], kinds["Service"]
    assert deploy["metadata"]["namespace"] == svc["metadata"]["namespace"] == v["smoke_namespace"]
    assert deploy["spec"]["replicas"] == v["smoke_replicas"]
    pod = deploy["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == v["smoke_image"] and c["imagePullPolicy"] == v["smoke_image_pull_policy"]
    assert c.get("command") == v["smoke_command"] and c.get("args") == v["smoke_args"]
    assert c["ports"][0]["containerPort"] == v["smoke_container_port"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/", "port": v["smoke_container_port"]}
    assert {e["name"] for e in c["env"]} == {"NODE_NAME", "POD_NAME"}
    assert {t["key"] for t in pod["tolerations"]} == {
        "node-role.kubernetes.io/master",
        "node-role.kubernetes.io/control-plane",
    }
    assert "preferredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    assert (
        deploy["spec"]["selector"]["matchLabels"]
        == svc["spec"]["selector"]
        == deploy["spec"]["template"]["metadata"]["labels"]
    )
    (port,) = svc["spec"]["ports"]
    assert svc["spec"]["type"] == "NodePort"
    assert (port["port"], port["targetPort"], port["nodePort"]) == (80, v["smoke_container_port"], v["smoke_node_port"])

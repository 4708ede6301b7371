"""Read an inventory file, resolve its provider's hosts, validate everything before any host is touched."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from provisioner.errors import BundleError
from provisioner.inventory.check import Check
from provisioner.inventory.model import (
    API_ENDPOINTS,
    CNIS,
    DEFAULT_API_PORTS,
    DEFAULT_MAX_SESSIONS,
    KUBERNETES_SOURCES,
    ROLES,
    Bastion,
    Cluster,
    Group,
    Host,
    Inventory,
    frozen_map,
)
from provisioner.inventory.provider import get_provider, provider_names
from provisioner.inventory.yamlsource import load_yaml_file

TOP_KEYS = {"provider", "cluster", "defaults", "hosts", "groups", "lab", "ec2", "vagrant"}
CLUSTER_KEYS = {
    "name",
    "kubernetes_version",
    "pod_cidr",
    "service_cidr",
    "cni",
    "control_plane_endpoint",
    "kubernetes_source",
    "bundle",
    "container_runtime",
    "vars",
    "api_endpoint",
    "api_vip",
    "api_port",
    "allow_unverified_bundle",
    "smoke",
    "api_cert_sans",
}
RUNTIME_KEYS = {"version", "registry_mirrors"}
CONNECTION_KEYS = {"user", "port", "ssh_key", "become", "known_hosts", "bastion", "max_sessions"}
HOST_KEYS = CONNECTION_KEYS | {"name", "address", "node_ip", "roles", "labels", "vars"}
BASTION_KEYS = {"address", "port", "user", "ssh_key"}
GROUP_KEYS = {"hosts", "vars"}

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
#: MAJOR.MINOR.PATCH, optionally a pre-release label (the lab's upgrade rehearsal target is 1.20.3-lab.0)
VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z][0-9A-Za-z.]*)?$")
REGISTRY_RE = re.compile(r"^(_default|[A-Za-z0-9]([A-Za-z0-9.-]{0,252})(:[0-9]{1,5})?)$")
MIRROR_URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")
ADDRESS_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
# Kubernetes label syntax (apimachinery validation.IsQualifiedName / IsValidLabelValue)
LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_PREFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
LABEL_KEY_HINT = (
    "a label key is [prefix/]name: name 1-63 letters, digits, '-', '_' or '.', starting and ending "
    "with a letter or digit; prefix a lowercase DNS name of at most 253 characters"
)
LABEL_VALUE_HINT = (
    "a label value is empty or 1-63 letters, digits, '-', '_' or '.', starting and ending "
    "with a letter or digit (quote it in YAML)"
)

DEFAULT_CLUSTER = {
    "kubernetes_version": "1.31.2",
    "pod_cidr": "10.244.0.0/16",
    "service_cidr": "10.96.0.0/12",
    "cni": "flannel",
    "control_plane_endpoint": None,
    "kubernetes_source": "pkgs",
    "bundle": None,
}

#: ports the built-in balancer must leave alone: Kubernetes' own (and sshd); NodePorts are 30000-32767
RESERVED_PORTS = {
    22: "sshd",
    2379: "etcd",
    2380: "etcd peers",
    6443: "kube-apiserver",
    10248: "kubelet healthz",
    10249: "kube-proxy metrics",
    10250: "kubelet",
    10256: "kube-proxy healthz",
    10257: "kube-controller-manager",
    10259: "kube-scheduler",
}
NODE_PORTS = range(30000, 32768)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _resolve_path(base: Path, value: str | None) -> str | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def load_inventory(
    path: str | Path,
    *,
    resolve: bool = True,
    host_resolver: Callable[[str, Mapping[str, Any], dict[str, Any]], list[dict[str, Any]]] | None = None,
) -> Inventory:
    """Load and validate an inventory.

    With `resolve=False` a non-static provider's hosts are not looked up (no lab is started, no AWS
    call is made): only the file itself is validated. `host_resolver(provider, section, raw)` can
    replace the provider lookup (tests)."""
    path = Path(path).expanduser()
    doc = load_yaml_file(path)
    v = Check(doc)
    raw = doc.data
    if raw is None:
        raise v.fail("", "the inventory is empty", "start from inventories/static-example.yaml")
    if not isinstance(raw, dict):
        raise v.fail(
            "",
            f"expected a mapping at the top level, got {type(raw).__name__}",
            "an inventory is a mapping with cluster:, hosts:, ... keys",
        )
    # top-level `x-...` keys are ignored: a place for &anchors that `<<: *anchor` merges elsewhere
    provider = raw.get("provider", "static")
    v.expect(provider, str, "provider")
    known = ("static", *provider_names())
    if provider not in known:
        raise v.fail("provider", f"unknown provider {provider!r}", f"use one of: {', '.join(known)}")
    # `<provider>:` is the section of the provider in use (a registered one's too)
    top_keys = TOP_KEYS | {provider} - {"static"}
    v.keys({k: val for k, val in raw.items() if not (isinstance(k, str) and k.startswith("x-"))}, top_keys, "")
    base = path.resolve().parent

    cluster = _cluster(v, raw.get("cluster"), base)
    defaults = raw.get("defaults") or {}
    v.expect(defaults, dict, "defaults")
    v.keys(defaults, CONNECTION_KEYS, "defaults")
    _check_connection(v, defaults, "defaults", base)

    raw_hosts = raw.get("hosts") or []
    v.expect(raw_hosts, list, "hosts", "hosts: is a list of mappings, each with name: and address:")
    provider_section: dict[str, Any] = {}
    if provider != "static":
        section = raw.get(provider)
        if section is None:
            raise v.fail(
                provider,
                f"provider: {provider} needs a {provider}: section",
                f"add a {provider}: mapping (see docs/{provider}.md)",
            )
        v.expect(section, dict, provider)
        provider_section = section
        impl = get_provider(provider)
        impl.validate_section(section, provider, v)  # errors name file:line like the loader's own
        if resolve:
            raw_doc = dict(raw)
            raw_doc["__file__"] = str(path.resolve())
            if host_resolver is not None:
                resolved = host_resolver(provider, section, raw_doc)
            else:
                resolved = impl.resolve_hosts(section, raw_doc)
                defaults = {**impl.connection_defaults(section), **defaults}
                # a provider that runs the API's balancer itself (ec2.load_balancer) gives the endpoint
                if cluster.api_endpoint == "external" and cluster.control_plane_endpoint is None:
                    endpoint = impl.resolve_endpoint(section, raw_doc)
                    if endpoint is not None:
                        cluster = replace(cluster, control_plane_endpoint=endpoint)
            raw_hosts = _merge_provider_hosts(v, resolved, raw_hosts)
        else:
            raw_hosts = [h for h in raw_hosts if isinstance(h, dict) and "address" in h]

    hosts = [_host(v, h, i, defaults, base) for i, h in enumerate(raw_hosts)]
    if resolve or provider == "static":
        _check_hosts(v, hosts, cluster)
    groups = _groups(v, raw.get("groups") or {}, hosts)
    hosts = [_with_groups(h, groups) for h in hosts]
    return Inventory(
        path=path.resolve(),
        provider=provider,
        cluster=cluster,
        hosts=tuple(hosts),
        groups=frozen_map(groups),
        provider_section=frozen_map(provider_section),
    )


def _merge_provider_hosts(v: Check, resolved: list[dict[str, Any]], overrides: list[Any]) -> list[dict[str, Any]]:
    by_name = {}
    for i, o in enumerate(overrides):
        v.expect(o, dict, f"hosts[{i}]")
        if "name" in o:
            by_name[o["name"]] = o
    merged = []
    for h in resolved:
        extra = by_name.pop(h.get("name"), {})
        merged.append({**h, **extra})
    if by_name:
        name = next(iter(by_name))
        idx = next(i for i, o in enumerate(overrides) if o.get("name") == name)
        raise v.fail(
            f"hosts[{idx}].name",
            f"host {name!r} is not provided by the provider",
            "hosts: entries of a non-static provider only add labels/vars to provider hosts",
        )
    return merged


def _cluster(v: Check, raw: Any, base: Path) -> Cluster:
    if raw is None:
        raise v.fail("cluster", "missing cluster: section", "add cluster: with at least name:")
    v.expect(raw, dict, "cluster")
    v.keys(raw, CLUSTER_KEYS, "cluster")
    c = {**DEFAULT_CLUSTER, **{k: val for k, val in raw.items() if val is not None or k == "control_plane_endpoint"}}
    name = c.get("name")
    if name is None:
        raise v.fail("cluster.name", "missing cluster name", "add cluster.name, e.g. name: demo")
    v.expect(name, str, "cluster.name")
    if not NAME_RE.match(name):
        raise v.fail(
            "cluster.name",
            f"invalid cluster name {name!r}",
            "use 1-40 lowercase letters, digits and '-', starting and ending alphanumeric",
        )
    version = c["kubernetes_version"]
    if isinstance(version, float):
        raise v.fail(
            "cluster.kubernetes_version",
            f'expected a version string like "1.31.2", got number {version!r}',
            'quote the version: kubernetes_version: "1.31.2"',
        )
    v.expect(version, str, "cluster.kubernetes_version", 'quote the version: kubernetes_version: "1.31.2"')
    if not VERSION_RE.match(version):
        raise v.fail(
            "cluster.kubernetes_version", f"invalid version {version!r}", 'use MAJOR.MINOR.PATCH, e.g. "1.31.2"'
        )
    version = version.lstrip("v")
    pod = v.cidr(c["pod_cidr"], "cluster.pod_cidr")
    svc = v.cidr(c["service_cidr"], "cluster.service_cidr")
    if pod.version == svc.version and pod.overlaps(svc):
        raise v.fail(
            "cluster.service_cidr",
            f"service CIDR {svc} overlaps pod CIDR {pod}",
            "pick disjoint ranges, e.g. pod 10.244.0.0/16 and service 10.96.0.0/12",
        )
    cni = c["cni"]
    v.expect(cni, str, "cluster.cni")
    if cni not in CNIS:
        raise v.fail("cluster.cni", f"unknown CNI {cni!r}", f"use one of: {', '.join(CNIS)}")
    endpoint = c["control_plane_endpoint"]
    if endpoint is not None:
        v.expect(endpoint, str, "cluster.control_plane_endpoint")
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise v.fail(
                "cluster.control_plane_endpoint",
                f"invalid endpoint {endpoint!r}",
                "use host:port, e.g. 10.0.0.100:6443 or api.example.com:6443",
            )
    source = c["kubernetes_source"]
    v.expect(source, str, "cluster.kubernetes_source")
    if source not in KUBERNETES_SOURCES:
        raise v.fail(
            "cluster.kubernetes_source",
            f"unknown kubernetes_source {source!r}",
            f"use one of: {', '.join(KUBERNETES_SOURCES)}",
        )
    bundle = c["bundle"]
    if bundle is not None:
        v.expect(bundle, str, "cluster.bundle")
    if source == "bundle" and bundle is None:
        raise v.fail(
            "cluster.bundle",
            "kubernetes_source: bundle needs cluster.bundle",
            "set cluster.bundle to the path of a bundle built by `kprov bundle build`",
        )
    allow_unverified = v.expect(c.get("allow_unverified_bundle", False), bool, "cluster.allow_unverified_bundle")
    if source == "bundle":
        _check_bundle_checksum_file(v, bundle, _resolve_path(base, bundle), allow_unverified)
    runtime = c.get("container_runtime") or {}
    v.expect(runtime, dict, "cluster.container_runtime")
    v.keys(runtime, RUNTIME_KEYS, "cluster.container_runtime")
    if runtime.get("version") is not None:
        v.expect(runtime["version"], str, "cluster.container_runtime.version", 'quote the version, e.g. "1.7.24-1"')
    mirrors = runtime.get("registry_mirrors") or {}
    v.expect(mirrors, dict, "cluster.container_runtime.registry_mirrors")
    for reg, urls in mirrors.items():
        where = f"cluster.container_runtime.registry_mirrors.{reg}"
        if not isinstance(reg, str) or not REGISTRY_RE.fullmatch(reg):
            raise v.fail(
                where,
                f"invalid registry name {reg!r}",
                "use a registry host like docker.io, registry.example.com:5000, or _default",
            )
        v.expect(urls, list, where, "give a list of mirror URLs")
        for j, url in enumerate(urls):
            if not isinstance(url, str) or not MIRROR_URL_RE.fullmatch(url):
                raise v.fail(
                    f"{where}[{j}]",
                    f"invalid mirror URL {url!r}",
                    "use http(s)://host[:port][/path] without spaces or quotes",
                )
    cvars = c.get("vars") or {}
    v.expect(cvars, dict, "cluster.vars")
    smoke = v.expect(c.get("smoke", True), bool, "cluster.smoke", "smoke: false skips the smoke test after `up`")
    mode, vip, prefix, api_port, endpoint = _api_endpoint(v, c, endpoint)
    cert_sans = _cert_sans(v, c.get("api_cert_sans"))
    return Cluster(
        name=name,
        kubernetes_version=version,
        pod_cidr=str(pod),
        service_cidr=str(svc),
        cni=cni,
        control_plane_endpoint=endpoint,
        kubernetes_source=source,
        bundle=_resolve_path(base, bundle),
        container_runtime=frozen_map(runtime),
        vars=frozen_map(cvars),
        api_endpoint=mode,
        api_vip=vip,
        api_vip_prefix=prefix,
        api_port=api_port,
        allow_unverified_bundle=allow_unverified,
        smoke=smoke,
        api_cert_sans=cert_sans,
    )


#: a SAN in the API server certificate: a DNS name (RFC 1123 labels, optionally a leading `*.` wildcard)
SAN_NAME_RE = re.compile(
    r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _cert_sans(v: Check, raw: Any) -> tuple[str, ...]:
    """`cluster.api_cert_sans`: extra names/addresses for the API server certificate (after kprov's own)."""
    if raw is None:
        return ()
    v.expect(raw, list, "cluster.api_cert_sans", "give a list, e.g. api_cert_sans: [api.example.com, 10.0.0.10]")
    out: list[str] = []
    for i, san in enumerate(raw):
        where = f"cluster.api_cert_sans[{i}]"
        if (
            not isinstance(san, str)
            or not san
            or (not _is_ip(san) and (len(san) > 253 or not SAN_NAME_RE.match(san) or re.fullmatch(r"[0-9.]+", san)))
        ):
            raise v.fail(
                where,
                f"{san!r} is not a DNS name or an IP address",
                "list DNS names (api.example.com) or IP addresses (10.0.0.10), one per item",
            )
        out.append(str(ipaddress.ip_address(san)) if _is_ip(san) else san.lower())
    return tuple(dict.fromkeys(out))


def _check_bundle_checksum_file(v: Check, written: str, resolved: str | None, allow_unverified: bool) -> None:
    """An existing bundle needs its `<bundle>.sha256` (whole-archive checksum, compared with the archive when
    the run starts: k8s/context.py). A bundle that does not exist yet is reported by the run that needs it."""
    from provisioner.bundle.sidecar import read_sidecar

    if resolved is None or not Path(resolved).is_file():
        return
    try:
        digest = read_sidecar(resolved, shown_as=written)
    except BundleError as exc:
        raise v.fail("cluster.bundle", exc.message, exc.hint or "") from None
    if digest is None and not allow_unverified:
        raise v.fail(
            "cluster.bundle",
            f"{written} has no checksum file {Path(written).name}.sha256: refusing an unverified bundle",
            "copy the .sha256 that `kprov bundle build` wrote along with the bundle, "
            "or set cluster.allow_unverified_bundle: true to use it unverified",
        )


def _api_endpoint(
    v: Check, c: Mapping[str, Any], endpoint: str | None
) -> tuple[str, str | None, int | None, int | None, str | None]:
    """`cluster.api_endpoint` and its settings -> (mode, vip, vip prefix, balancer port, control_plane_endpoint).

    With `vip` and `local` kprov runs the balancer, so the endpoint every node and kubeadm use is derived:
    `<api_vip>:<api_port>` and `127.0.0.1:<api_port>` (docs/ha.md)."""
    mode = c.get("api_endpoint", "external")
    v.expect(mode, str, "cluster.api_endpoint", f"use one of: {', '.join(API_ENDPOINTS)}")
    if mode not in API_ENDPOINTS:
        raise v.fail(
            "cluster.api_endpoint", f"unknown api_endpoint {mode!r}", f"use one of: {', '.join(API_ENDPOINTS)}"
        )
    raw_vip, raw_port = c.get("api_vip"), c.get("api_port")
    if mode == "external":
        for key, value, modes in (("api_vip", raw_vip, "vip"), ("api_port", raw_port, "vip or local")):
            if value is not None:
                raise v.fail(
                    f"cluster.{key}",
                    f"{key} is only used with api_endpoint: {modes}",
                    f"set api_endpoint: {modes.split()[0]}, or remove {key}",
                )
        return mode, None, None, None, endpoint
    if endpoint is not None:
        raise v.fail(
            "cluster.control_plane_endpoint",
            f"control_plane_endpoint is set by kprov with api_endpoint: {mode}",
            "remove control_plane_endpoint, or use api_endpoint: external for your own balancer",
        )
    port = DEFAULT_API_PORTS[mode] if raw_port is None else v.port(raw_port, "cluster.api_port")
    if port in RESERVED_PORTS or port in NODE_PORTS:
        user = RESERVED_PORTS.get(port, "Kubernetes NodePorts (30000-32767)")
        raise v.fail(
            "cluster.api_port",
            f"port {port} is in use on the nodes by {user}",
            f"pick a free port for the balancer, e.g. {DEFAULT_API_PORTS[mode]}",
        )
    if mode == "local":
        if raw_vip is not None:
            raise v.fail(
                "cluster.api_vip",
                "api_vip is only used with api_endpoint: vip",
                "remove api_vip, or set api_endpoint: vip",
            )
        return mode, None, None, port, f"127.0.0.1:{port}"
    if raw_vip is None:
        raise v.fail(
            "cluster.api_vip",
            "api_endpoint: vip needs cluster.api_vip",
            "set api_vip to a free address in the control planes' subnet, e.g. 10.0.0.250 (or 10.0.0.250/24)",
        )
    v.expect(raw_vip, str, "cluster.api_vip", "write the address as a string, e.g. 10.0.0.250")
    try:
        iface = ipaddress.ip_interface(raw_vip if "/" in raw_vip else f"{raw_vip}/24")
    except ValueError:
        raise v.fail(
            "cluster.api_vip",
            f"invalid api_vip {raw_vip!r}",
            "give an IPv4 address, optionally with the subnet's prefix, e.g. 10.0.0.250/24",
        ) from None
    if iface.version != 4 or not 8 <= iface.network.prefixlen <= 30:
        raise v.fail(
            "cluster.api_vip",
            f"invalid api_vip {raw_vip!r}",
            "give an IPv4 address with a prefix from /8 to /30, e.g. 10.0.0.250/24",
        )
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise v.fail(
            "cluster.api_vip",
            f"api_vip {iface.ip} is the network or broadcast address of {iface.network}",
            "pick a free host address in the control planes' subnet",
        )
    return mode, str(iface.ip), iface.network.prefixlen, port, f"{iface.ip}:{port}"


def _bastion(v: Check, raw: Any, where: str, base: Path) -> Bastion | None:
    if raw is None:
        return None
    v.expect(raw, dict, where)
    v.keys(raw, BASTION_KEYS, where)
    if "address" not in raw:
        raise v.fail(where, "bastion needs an address", "add address: of the jump host")
    v.expect(raw["address"], str, f"{where}.address")
    port = v.port(raw.get("port", 22), f"{where}.port")
    user = v.expect(raw.get("user", "root"), str, f"{where}.user")
    key = raw.get("ssh_key")
    if key is not None:
        v.expect(key, str, f"{where}.ssh_key")
    return Bastion(address=raw["address"], port=port, user=user, ssh_key=_resolve_path(base, key))


def _check_connection(v: Check, conn: Mapping[str, Any], where: str, base: Path) -> None:
    """Connection settings (in `defaults:` or a host) checked where they are written."""
    if "port" in conn:
        v.port(conn["port"], f"{where}.port")
    for key in ("user", "ssh_key", "known_hosts"):
        if conn.get(key) is not None:
            v.expect(conn[key], str, f"{where}.{key}")
    if "become" in conn:
        v.expect(conn["become"], bool, f"{where}.become")
    if "max_sessions" in conn:
        _max_sessions(v, conn["max_sessions"], f"{where}.max_sessions")
    _bastion(v, conn.get("bastion"), f"{where}.bastion", base)


def _max_sessions(v: Check, value: Any, where: str) -> int:
    """Concurrent SSH channels kprov opens on one connection: at most the host's sshd MaxSessions
    (one of them holds the host's kprov lock for the whole run)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 64:
        raise v.fail(
            where,
            f"max_sessions must be an integer from 2 to 64, got {value!r}",
            "set it at or below the host's sshd MaxSessions (OpenSSH's default is 10)",
        )
    return value


def _host(v: Check, raw: Any, i: int, defaults: dict[str, Any], base: Path) -> Host:
    where = f"hosts[{i}]"
    v.expect(raw, dict, where, "each host is a mapping with name: and address:")
    v.keys(raw, HOST_KEYS, where)
    _check_connection(v, raw, where, base)
    h = {**defaults, **raw}
    for key in ("name", "address"):
        if key not in h:
            raise v.fail(where, f"missing {key}", "every host needs name: and address:")
    name = v.expect(h["name"], str, f"{where}.name")
    if not HOSTNAME_RE.match(name):
        raise v.fail(
            f"{where}.name",
            f"invalid host name {name!r}",
            "use lowercase letters, digits and '-' (it becomes the node's hostname)",
        )
    address = v.expect(h["address"], str, f"{where}.address", "write the address as a string")
    if not ADDRESS_RE.match(address) and not _is_ip(address):
        raise v.fail(f"{where}.address", f"invalid address {address!r}", "use an IP address or a DNS name")
    if "node_ip" in h and h["node_ip"] is not None:
        node_ip = v.ip(h["node_ip"], f"{where}.node_ip")
        if ":" in node_ip:
            raise v.fail(
                f"{where}.node_ip",
                f"IPv6 node_ip {node_ip} is not supported yet",
                "kprov builds IPv4 single-stack clusters: give the host's IPv4 address",
            )
    else:
        if _is_ip(address) and ":" in address:
            raise v.fail(
                where,
                f"host {name!r} has an IPv6 address and no node_ip",
                "kprov builds IPv4 single-stack clusters: set node_ip: to the host's IPv4 address",
            )
        try:
            node_ip = str(ipaddress.ip_address(address))
        except ValueError:
            raise v.fail(
                where,
                f"host {name!r} has a DNS address and no node_ip",
                "set node_ip: to the IP Kubernetes should use on this host",
            ) from None
    port = v.port(h.get("port", 22), f"{where}.port")
    user = v.expect(h.get("user", "root"), str, f"{where}.user")
    host_key = h.get("ssh_key")
    if host_key is not None:
        v.expect(host_key, str, f"{where}.ssh_key")
    become = v.expect(h.get("become", user != "root"), bool, f"{where}.become")
    roles = h.get("roles", ["worker"])
    v.expect(roles, list, f"{where}.roles", "roles is a list, e.g. roles: [control_plane]")
    for j, role in enumerate(roles):
        if role not in ROLES:
            raise v.fail(f"{where}.roles[{j}]", f"unknown role {role!r}", f"use one of: {', '.join(ROLES)}")
    labels = _labels(v, h.get("labels") or {}, f"{where}.labels")
    hvars = h.get("vars") or {}
    v.expect(hvars, dict, f"{where}.vars")
    known = h.get("known_hosts")
    if known is not None:
        v.expect(known, str, f"{where}.known_hosts")
    return Host(
        name=name,
        address=address,
        node_ip=node_ip,
        port=port,
        user=user,
        ssh_key=_resolve_path(base, host_key),
        become=become,
        roles=tuple(dict.fromkeys(roles)),
        labels=frozen_map(labels),
        vars=frozen_map(hvars),
        known_hosts=_resolve_path(base, known),
        bastion=_bastion(v, h.get("bastion"), f"{where}.bastion", base),
        max_sessions=_max_sessions(v, h.get("max_sessions", DEFAULT_MAX_SESSIONS), f"{where}.max_sessions"),
    )


def _labels(v: Check, raw: Any, where: str) -> dict[str, str]:
    """Node labels checked with Kubernetes' syntax now, so a bad one is bad input before any host is touched
    (not a failed `kubectl label` at the end of `up`). Numbers become strings, booleans "true"/"false"."""
    v.expect(raw, dict, where)
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _is_label_key(key):
            raise v.fail(f"{where}.{key}", f"invalid label key {key!r}", LABEL_KEY_HINT)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif value is None:
            text = ""
        elif isinstance(value, (str, int, float)):
            text = str(value)
        else:
            raise v.fail(
                f"{where}.{key}", f"label {key!r}: expected a string, got {type(value).__name__}", LABEL_VALUE_HINT
            )
        if not LABEL_VALUE_RE.match(text):
            raise v.fail(f"{where}.{key}", f"invalid label value {text!r} for {key!r}", LABEL_VALUE_HINT)
        out[key] = text
    return out


def _is_label_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not LABEL_PREFIX_RE.match(prefix)):
        return False
    return bool(LABEL_NAME_RE.match(name))


def _check_hosts(v: Check, hosts: list[Host], cluster: Cluster) -> None:
    if not hosts:
        raise v.fail("hosts", "no hosts", "list at least one host with roles: [control_plane]")
    seen_names: dict[str, int] = {}
    seen_addr: dict[tuple[str, int], int] = {}
    seen_ip: dict[str, int] = {}
    for i, h in enumerate(hosts):
        if h.name in seen_names:
            raise v.fail(
                f"hosts[{i}].name",
                f"duplicate host name {h.name!r} (also hosts[{seen_names[h.name]}])",
                "host names must be unique",
            )
        seen_names[h.name] = i
        if (h.address, h.port) in seen_addr:
            raise v.fail(
                f"hosts[{i}].address",
                f"duplicate address {h.address}:{h.port} (also hosts[{seen_addr[(h.address, h.port)]}])",
                "each host needs its own address (or port)",
            )
        seen_addr[(h.address, h.port)] = i
        if h.node_ip in seen_ip:
            raise v.fail(
                f"hosts[{i}].node_ip",
                f"duplicate node_ip {h.node_ip} (also hosts[{seen_ip[h.node_ip]}])",
                "every node needs its own node_ip",
            )
        seen_ip[h.node_ip] = i
        ip = ipaddress.ip_address(h.node_ip)
        for what, net in (("pod", cluster.pod_cidr), ("service", cluster.service_cidr)):
            if ip in ipaddress.ip_network(net):
                raise v.fail(
                    f"hosts[{i}].node_ip",
                    f"node_ip {h.node_ip} lies inside the {what} CIDR {net}",
                    f"pick a cluster.{what}_cidr that does not contain your hosts' addresses",
                )
    cps = [h for h in hosts if h.is_control_plane]
    if not cps:
        raise v.fail("hosts", "no control plane", "give at least one host roles: [control_plane]")
    if cluster.api_endpoint == "vip":
        _check_vip(v, hosts, cps, cluster)
    if len(cps) > 1 and not cluster.control_plane_endpoint:
        raise v.fail(
            "cluster.control_plane_endpoint",
            f"{len(cps)} control planes need a control_plane_endpoint",
            "set cluster.control_plane_endpoint to a load balancer or VIP host:port",
        )


def _check_vip(v: Check, hosts: list[Host], cps: list[Host], cluster: Cluster) -> None:
    """The VIP moves between the control planes by VRRP: it must be on their L2 subnet and nobody's address."""
    vip = ipaddress.ip_address(cluster.api_vip or "")
    for h in hosts:
        if str(vip) in (h.node_ip, h.address):
            raise v.fail(
                "cluster.api_vip",
                f"api_vip {vip} is already the address of host {h.name!r}",
                "pick an unused address in the control planes' subnet",
            )
    for h in cps:
        net = ipaddress.ip_network(f"{h.node_ip}/{cluster.api_vip_prefix}", strict=False)
        if vip not in net:
            raise v.fail(
                "cluster.api_vip",
                f"api_vip {vip} is outside {net}, the subnet of control plane {h.name!r} ({h.node_ip})",
                "pick a free address in the control planes' subnet (give its prefix as api_vip: A.B.C.D/NN)",
            )


def _groups(v: Check, raw: Any, hosts: list[Host]) -> dict[str, Group]:
    v.expect(raw, dict, "groups")
    names = {h.name for h in hosts}
    out: dict[str, Group] = {}
    for gname, g in raw.items():
        where = f"groups.{gname}"
        g = g or {}
        v.expect(g, dict, where)
        v.keys(g, GROUP_KEYS, where)
        members = g.get("hosts") or []
        v.expect(members, list, f"{where}.hosts")
        if gname in ("all", "control_plane", "worker") and members:
            raise v.fail(
                f"{where}.hosts",
                f"built-in group {gname!r} cannot list hosts",
                "membership of built-in groups comes from each host's roles",
            )
        for j, m in enumerate(members):
            if m not in names:
                raise v.fail(f"{where}.hosts[{j}]", f"unknown host {m!r}", "list names from hosts:")
        gvars = g.get("vars") or {}
        v.expect(gvars, dict, f"{where}.vars")
        out[gname] = Group(name=gname, hosts=tuple(members), vars=frozen_map(gvars))
    return out


def _with_groups(h: Host, groups: Mapping[str, Group]) -> Host:
    from dataclasses import replace

    member = ["all", *h.roles] + [g.name for g in groups.values() if h.name in g.hosts]
    return replace(h, groups=tuple(dict.fromkeys(member)))


def host_vars_layers(inv: Inventory, host: Host) -> list[Mapping[str, Any]]:
    """Variable layers for a host, lowest precedence first (after role defaults, before -e)."""
    layers: list[Mapping[str, Any]] = [inv.cluster.vars]
    for gname in host.groups:
        g = inv.groups.get(gname)
        if g is not None:
            layers.append(g.vars)
    layers.append(host.vars)
    return layers

"""A JSON Schema (draft 2020-12) of kprov's inventory format, for editors to validate and complete with.

Built from the loader's own key sets, so a key the loader accepts is never missing here; the loader stays
the authority on values (addresses, CIDRs, versions), the schema checks shapes and names.
"""

from __future__ import annotations

from typing import Any

from provisioner.inventory import loader
from provisioner.inventory.model import CNIS, KUBERNETES_SOURCES, PROVIDERS, ROLES

_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_MAP = {"type": "object"}

_CONNECTION: dict[str, Any] = {
    "user": _STR,
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "ssh_key": _STR,
    "become": {"type": "boolean"},
    "known_hosts": _STR,
    "max_sessions": {"type": "integer", "minimum": 1},
    "bastion": {
        "type": "object",
        "additionalProperties": False,
        "properties": {k: ({"type": "integer"} if k == "port" else _STR) for k in sorted(loader.BASTION_KEYS)},
    },
}
_HOST_ONLY: dict[str, Any] = {
    "name": {"type": "string", "pattern": loader.HOSTNAME_RE.pattern},
    "address": _STR,
    "node_ip": _STR,
    "roles": {"type": "array", "items": {"enum": list(ROLES)}, "minItems": 1},
    "labels": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
    "vars": _MAP,
}
_CLUSTER: dict[str, Any] = {
    "name": {"type": "string", "pattern": loader.NAME_RE.pattern},
    "kubernetes_version": _STR,
    "pod_cidr": _STR,
    "service_cidr": _STR,
    "cni": {"enum": list(CNIS)},
    "control_plane_endpoint": _STR_OR_NULL,
    "kubernetes_source": {"enum": list(KUBERNETES_SOURCES)},
    "bundle": _STR_OR_NULL,
    "vars": _MAP,
    "api_endpoint": _STR,
    "api_vip": _STR_OR_NULL,
    "api_port": {"type": ["integer", "null"]},
    "allow_unverified_bundle": {"type": "boolean"},
    "smoke": {"type": "boolean", "description": "false: `up` skips the smoke test"},
    "api_cert_sans": {
        "type": "array",
        "items": _STR,
        "description": "extra API server certificate SANs (DNS names or IP addresses)",
    },
    "container_runtime": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "version": _STR_OR_NULL,
            "registry_mirrors": {"type": ["object", "null"], "additionalProperties": {"type": "array", "items": _STR}},
        },
    },
}


def _props(known: set[str], typed: dict[str, Any]) -> dict[str, Any]:
    # every key the loader accepts, typed where we know the type
    return {k: typed.get(k, {}) for k in sorted(known)}


def schema() -> dict[str, Any]:
    host = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": _props(loader.HOST_KEYS, {**_CONNECTION, **_HOST_ONLY}),
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://kprov.invalid/schemas/inventory.json",
        "title": "kprov inventory",
        "type": "object",
        "additionalProperties": False,
        "required": ["cluster"],
        "properties": {
            **{k: {} for k in sorted(loader.TOP_KEYS)},
            "provider": {"enum": list(PROVIDERS)},
            "cluster": {
                "type": "object",
                "additionalProperties": False,
                "properties": _props(loader.CLUSTER_KEYS, _CLUSTER),
            },
            "defaults": {
                "type": "object",
                "additionalProperties": False,
                "properties": _props(loader.CONNECTION_KEYS, _CONNECTION),
            },
            "hosts": {"type": "array", "items": host},
            "groups": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"hosts": {"type": "array", "items": _STR}, "vars": _MAP},
                },
            },
            "lab": _MAP,
            "ec2": _MAP,
            "vagrant": _MAP,
        },
        "patternProperties": {"^x-": {}},
    }

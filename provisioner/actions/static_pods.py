"""Restart the control-plane static pods so that they load new certificates or flags, one pod at a time.

A static pod is restarted by giving its manifest a new `kprov.io/restarted` annotation: kubelet derives the
pod's UID from the manifest, so the pod gets a new UID and kubelet replaces the old one as it does during
`kubeadm upgrade`. Moving a manifest out and back instead (same content, same UID) races kubelet's cleanup of
the old pod: kubelet can later stop the re-added pod for good (kubernetes/kubernetes#104648, #113145), which
left an API server down minutes after it had answered healthy.

Each pod is done before the next one: its old processes gone, a new one running, and the pod's health (etcd through the API server's etcd check, the API server's /healthz).
"""

from __future__ import annotations

import base64
import secrets
import shlex
import time
from collections.abc import Callable, Sequence

import yaml

from provisioner.actions._remote import checked
from provisioner.errors import KprovError
from provisioner.transport.ssh import SSHHost

MANIFESTS = "/etc/kubernetes/manifests"
ADMIN_CONF = "/etc/kubernetes/admin.conf"
STAGING = "/etc/kubernetes/kprov/staged"
ANNOTATION = "kprov.io/restarted"
#: etcd first (the API server follows it), the API server next, the controllers last, as `kubeadm upgrade` does
ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def new_stamp() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


def stamp_manifest(text: str, stamp: str, *, source: str = "manifest") -> str:
    """The static pod manifest with the restart annotation set to `stamp`; everything else kept."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KprovError(
            f"{source} is not valid YAML ({exc.__class__.__name__})", hint="fix or regenerate the manifest"
        ) from None
    if not isinstance(doc, dict) or doc.get("kind") != "Pod" or not isinstance(doc.get("metadata"), dict):
        raise KprovError(f"{source} is not a Pod manifest", hint="fix or regenerate the manifest")
    meta = doc["metadata"]
    annotations = meta.get("annotations")
    meta["annotations"] = {**(annotations if isinstance(annotations, dict) else {}), ANNOTATION: stamp}
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def _health(pod: str, server: str) -> str:
    """A shell condition true once `pod` is healthy (the API server's own checks, asked on this host)."""
    path = {"etcd": "/healthz/etcd", "kube-apiserver": "/healthz"}.get(pod)
    if path is None:
        return "true"
    return (
        f"kubectl --kubeconfig {ADMIN_CONF} --server {shlex.quote(server)} get --raw={path} "
        "--request-timeout=5s 2>/dev/null | grep -qx ok"
    )


def restart_script(pod: str, manifest: str, server: str, timeout_s: int) -> str:
    """Install the stamped manifest atomically, then wait until the pod's old processes are gone, a new one
    runs and the pod is healthy; exit 1 with the processes seen after `timeout_s`.

    Processes, not `crictl` filters: they read the same with cri-tools and with the lab's crictl stand-in,
    and a container's main process is the pod's command (kubeadm manifests start with the binary's name)."""
    q = shlex.quote
    b64 = base64.b64encode(manifest.encode()).decode()
    match = q(f"^{pod}( |$)")
    return f"""
set -e
end=$(( $(date +%s) + {timeout_s} ))
old=$(pgrep -f {match} || true)
umask 077
mkdir -p {STAGING}
printf '%s' {q(b64)} | base64 -d > {STAGING}/{pod}.yaml
mv -f {STAGING}/{pod}.yaml {MANIFESTS}/{pod}.yaml
set +e
back() {{
  now=$(pgrep -f {match}) || return 1
  for p in $old; do printf '%s\\n' "$now" | grep -qx "$p" && return 1; done
  return 0
}}
until back && {_health(pod, server)}; do
  if [ "$(date +%s)" -ge "$end" ]; then
    echo "{pod} did not come back healthy within {timeout_s}s (processes before: $old, now: $(pgrep -f {match} | tr '\\n' ' '))" >&2
    exit 1
  fi
  sleep 2
done
echo "{pod} restarted"
"""


def restart_static_pods(
    ssh: SSHHost,
    server: str,
    *,
    pods: Sequence[str] = ORDER,
    timeout_s: int = 300,
    progress: Callable[[str], None] = lambda _m: None,
) -> tuple[str, ...]:
    """Restart these static pods on this control plane, one after the other in `ORDER`; the pods restarted
    (a pod without a manifest here is skipped). CommandFailed names the pod that did not come back."""
    done: list[str] = []
    for pod in sorted(pods, key=ORDER.index):
        path = f"{MANIFESTS}/{pod}.yaml"
        if ssh.run(["test", "-e", path], timeout=30).rc != 0:
            continue
        stamp = new_stamp()
        manifest = stamp_manifest(ssh.fetch(path).decode("utf-8", "replace"), stamp, source=f"{ssh.host.name}:{path}")
        progress(f"{ssh.host.name}: restarting {pod}")
        t0 = time.monotonic()
        checked(
            ssh,
            ssh.script(restart_script(pod, manifest, server, timeout_s), timeout=timeout_s + 60),
            f"restarting {pod}",
            hint=f"see `journalctl -u kubelet` on {ssh.host.name}",
        )
        progress(f"{ssh.host.name}: {pod} back and healthy in {time.monotonic() - t0:.0f}s")
        done.append(pod)
    return tuple(done)

"""Restart the control-plane static pods so that they load new certificates or flags, one pod at a time.

A static pod is restarted by giving its manifest a new `kprov.io/restarted` annotation: kubelet derives the
pod's UID from the manifest, so the pod gets a new UID and kubelet replaces the old one as it does during
`kubeadm upgrade`. Moving a manifest out and back instead (same content, same UID) races kubelet's cleanup of
the old pod: kubelet can later stop the re-added pod for good (kubernetes/kubernetes#104648, #113145), which
left an API server down minutes after it had answered healthy.

Each pod is done before the next one: its old processes gone, a new one running, and the pod's health (etcd
through the API server's etcd check, the API server's /healthz; the controllers: up for SETTLE_S seconds).
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
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1 << 20)  # never fold an arg


#: the controller manager and scheduler have no health check kprov can reach on every host (no curl there, a
#: kubeconfig with a CA): their new process must stay up this long (a bad flag makes them exit at once)
SETTLE_S = 5


def _health(pod: str, server: str) -> str:
    """A shell condition true once `pod` is healthy (the API server's own checks, asked on this host)."""
    path = {"etcd": "/healthz/etcd", "kube-apiserver": "/healthz"}.get(pod)
    if path is None:
        return f'[ "$age" -ge {SETTLE_S} ]'
    return (
        f"kubectl --kubeconfig {ADMIN_CONF} --server {shlex.quote(server)} get --raw={path} "
        "--request-timeout=5s 2>/dev/null | grep -qx ok"
    )


def restart_script(
    pod: str, manifest: str, server: str, timeout_s: int, *, manifests: str = MANIFESTS, staging: str = STAGING
) -> str:
    """Install the stamped manifest atomically, then wait until every process of the pod is younger than the
    new manifest (the old ones are gone, a new one runs) and the pod is healthy; exit 1 with the processes
    seen after `timeout_s`.

    Processes, not `crictl` filters: they read the same with cri-tools and with the lab's crictl stand-in, and
    a container's main process is the pod's command (kubeadm manifests start with the binary's name). Start
    times, not the PIDs seen before: a pod kubelet was already replacing (reconfigure rewrote its manifest
    just before) or one between two crash-loop restarts has no PID to remember, and its next process is as old
    as this change only if kubelet started it for the new manifest. A process of the same name outside the
    control plane (a workload running `etcd` on an untainted control plane) makes this wait time out."""
    q = shlex.quote
    b64 = base64.b64encode(manifest.encode()).decode()
    match = q(f"^{pod}( |$)")
    return f"""
set -e
command -v pgrep >/dev/null 2>&1 && command -v ps >/dev/null 2>&1 || {{ echo "pgrep and ps (procps) are needed to follow {pod}'s restart" >&2; exit 1; }}
end=$(( $(date +%s) + {timeout_s} ))
umask 077
mkdir -p {q(staging)}
printf '%s' {q(b64)} | base64 -d > {q(staging + "/" + pod + ".yaml")}
# start times are whole seconds (ps etimes, date +%s): a process that started before this script reads as
# started at most 1 s later than it did, so 2 s of margin keep every older process before $since
sleep 2
since=$(date +%s)
mv -f {q(staging + "/" + pod + ".yaml")} {q(manifests + "/" + pod + ".yaml")}
set +e
# true when every process of the pod started at or after $since, and one runs; $age: the youngest one's age
back() {{
  pids=$(pgrep -f {match}) || return 1
  now=$(date +%s); age=
  for p in $pids; do
    e=$(ps -o etimes= -p "$p" | tr -d ' ') && [ -n "$e" ] || continue
    [ $((now - e)) -ge "$since" ] || return 1
    [ -z "$age" ] || [ "$e" -lt "$age" ] && age=$e
  done
  [ -n "$age" ]
}}
until back && {_health(pod, server)}; do
  if [ "$(date +%s)" -ge "$end" ]; then
    echo "{pod} did not come back healthy within {timeout_s}s (its processes now: $(pgrep -f {match} | tr '\n' ' '))" >&2
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
        res = ssh.run(["test", "-e", path], timeout=30)
        if res.rc == 1:
            continue
        checked(ssh, res, f"looking for {path}")
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

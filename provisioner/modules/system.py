"""System modules: package (apt), apt_repository, service (systemd), sysctl, kernel_module, swap."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from provisioner.errors import RoleError
from provisioner.facts.parsers import (
    FileState,
    PackageState,
    ServiceState,
    SwapState,
    dpkg_script,
    file_state_script,
    parse_dpkg,
    parse_file_state,
    parse_loaded_modules,
    parse_swap,
    parse_sysctl_values,
    parse_systemctl_show,
)
from provisioner.modules.base import (
    Change,
    Decision,
    FactQuery,
    Module,
    NoChange,
    Param,
    as_list,
    fail_on_apply,
    join,
    q,
    register,
    text_diff,
    write_file_script,
)

APT_ENV = "DEBIAN_FRONTEND=noninteractive"
#: bounded waits: the dpkg lock (another apt run) 300 s; a mirror or proxy that stops answering 60 s per
#: connection, 3 retries, instead of apt's defaults that let a stalled download hold the run for many minutes
APT_NET = "-o Acquire::Retries=3 -o Acquire::http::Timeout=60 -o Acquire::https::Timeout=60"
APT_OPTS = f"-o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold {APT_NET}"
#: apt's network phases (update, download) get a hard bound and two more tries: a mirror or caching proxy that
#: keeps a connection open without sending (seen with a cold apt-cacher-ng) defeats apt's own timeouts. The dpkg
#: phase is never killed: packages are downloaded first (`--download-only`), then installed from the cache.
APT_NET_TRIES = 3
APT_NET_BOUND_S = 300


def apt_retry_fn(bound_s: int = APT_NET_BOUND_S, tries: int = APT_NET_TRIES) -> str:
    """The shell function `kprov_apt_net CMD...`: CMD bounded to `bound_s`, up to `tries` times."""
    return (
        "kprov_apt_net() { n=1; "
        f'until timeout -k 10 {bound_s} "$@"; do '
        f'[ "$n" -lt {tries} ] || {{ echo "kprov: $* failed or stalled {tries} times '
        f'(each bounded to {bound_s}s)" >&2; return 1; }}; '
        f'echo "kprov: failed or stalled (try $n of {tries}), retrying: $*" >&2; n=$((n + 1)); sleep 5; '
        "done; }"
    )


#: a run interrupted in the middle of dpkg (Ctrl-C, a timeout, a lost connection) leaves packages unpacked but not
#: configured, and apt refuses every later install ("dpkg was interrupted") until they are: finish that first
DPKG_RESUME = (
    'if [ -n "$(ls -A /var/lib/dpkg/updates 2>/dev/null)" ] || [ -n "$(dpkg --audit 2>/dev/null)" ]; '
    f"then {APT_ENV} dpkg --force-confdef --force-confold --configure -a; fi"
)


@register
class PackageModule(Module):
    """apt packages: present (optionally pinned to a version), absent; hold against upgrades."""

    name = "package"
    params = {
        "name": Param((str, list), required=True),
        "state": Param(str, default="present", choices=("present", "absent")),
        "version": Param(str),
        "hold": Param(bool, default=False),
        "update_cache": Param(bool, default=True),
        "install_recommends": Param(bool, default=False),
        "deb": Param(str),  # install from a local .deb path on the host instead of a repository
    }

    def normalize(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        args["name"] = [str(n) for n in as_list(args["name"])]
        if not args["name"]:
            raise RoleError(f"{where}: package needs at least one name", hint="name: containerd")
        if args["version"] and len(args["name"]) != 1 and "=" not in args["version"]:
            # one version for several packages (kubelet/kubeadm/kubectl share one) is fine
            pass
        return args

    def facts(self, args: Mapping[str, Any]) -> list[FactQuery]:
        return [FactQuery("pkgs", "packages", dpkg_script(args["name"]), parse_dpkg)]

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        # installing packages writes files and may start services
        return {"*"}

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        # dpkg reports "libc6" for a query "libc6:amd64": look facts up by both spellings
        states: dict[str, PackageState] = dict(facts["pkgs"])
        for n in args["name"]:
            base = n.split(":", 1)[0]
            if n not in states and base in states:
                states[n] = states[base]
        names = args["name"]
        version = args["version"]
        if args["state"] == "absent":
            present = [n for n in names if states.get(n, PackageState(n, False)).installed]
            if not present:
                return NoChange(f"absent: {', '.join(names)}")
            return Change(
                f"remove {', '.join(present)}",
                f"apt-mark unhold {join(present)} >/dev/null 2>&1 || true\n"
                f"{APT_ENV} apt-get purge -y -q {APT_OPTS} {join(present)}",
                diff="".join(f"- {n} {states[n].version}\n" for n in present),
            )
        missing, wrong, unheld = [], [], []
        for n in names:
            st = states.get(n, PackageState(n, False))
            if not st.installed:
                missing.append(n)
            elif version and not _version_matches(st.version, version):
                wrong.append(n)
            elif args["hold"] and not st.held:
                unheld.append(n)
        if not (missing or wrong or unheld):
            summary = ", ".join(f"{n} {states[n].version}" for n in names)
            return NoChange(f"already present: {summary}")
        to_install = missing + wrong
        lines = []
        diff = ""
        if to_install:
            specs = [f"{n}={version}" if version else n for n in to_install]
            if args["deb"]:
                specs = [args["deb"]]
            recommends = "" if args["install_recommends"] else " --no-install-recommends"
            lines.append(DPKG_RESUME)
            install = f"apt-get install -y -q{recommends} --allow-downgrades --allow-change-held-packages {APT_OPTS}"
            if not args["deb"]:
                lines.append(apt_retry_fn())
                if args["update_cache"]:
                    lines.append(f"kprov_apt_net env {APT_ENV} apt-get update -q {APT_OPTS} >/dev/null")
                lines.append(f"kprov_apt_net env {APT_ENV} {install} --download-only {join(specs)} >/dev/null")
            if wrong:
                lines.append(f"apt-mark unhold {join(wrong)} >/dev/null 2>&1 || true")
            lines.append(f"{APT_ENV} {install} {join(specs)}")
            diff = "".join(f"+ {s}\n" for s in specs)
        if args["hold"]:
            lines.append(f"apt-mark hold {join(names)} >/dev/null")
        msg = []
        if missing:
            msg.append(f"install {', '.join(missing)}")
        if wrong:
            msg.append(f"change version of {', '.join(wrong)} to {version}")
        if unheld and not to_install:
            msg.append(f"hold {', '.join(unheld)}")
        return Change("; ".join(msg) or "hold packages", "\n".join(lines), diff=diff)


def _version_matches(installed: str, wanted: str) -> bool:
    """`1.31.2` matches `1.31.2-1.1`; a trailing `*` is a prefix pin."""
    if wanted.endswith("*"):
        return installed.startswith(wanted[:-1])
    return installed == wanted or installed.startswith((wanted + "-", wanted + "~"))


@register
class AptRepositoryModule(Module):
    """An apt source with its own signed-by keyring (deb822 .sources file)."""

    name = "apt_repository"
    params = {
        "name": Param(str, required=True),
        "uri": Param(str, required=True),
        "suites": Param(str, required=True),
        "components": Param(str, default=""),
        "key_url": Param(str, required=True),
        "keyring": Param(str),
        "state": Param(str, default="present", choices=("present", "absent")),
    }

    def normalize(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args["name"]):
            raise RoleError(
                f"{where}: apt_repository name {args['name']!r} is not a plain file name",
                hint="letters, digits, '.', '_' and '-'",
            )
        for key in ("uri", "suites", "components", "key_url"):
            if any(c in args[key] for c in "\n\r\0"):
                # one line of a deb822 file each: a line break would add fields of the caller's choosing
                raise RoleError(
                    f"{where}: apt_repository {key} {args[key]!r} has a line break",
                    hint="one line each: uri, suites, components, key_url",
                )
        args["keyring"] = args["keyring"] or f"/etc/apt/keyrings/{args['name']}.gpg"
        args["file"] = f"/etc/apt/sources.list.d/{args['name']}.sources"
        return args

    def facts(self, args: Mapping[str, Any]) -> list[FactQuery]:
        return [
            FactQuery("list", f"file:{args['file']}", file_state_script(args["file"]), parse_file_state),
            FactQuery("key", f"file:{args['keyring']}", file_state_script(args["keyring"], False), parse_file_state),
        ]

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return {f"file:{args['file']}", f"file:{args['keyring']}", "packages"}

    def render(self, args: Mapping[str, Any]) -> bytes:
        lines = ["Types: deb", f"URIs: {args['uri']}", f"Suites: {args['suites']}"]
        if args["components"]:
            lines.append(f"Components: {args['components']}")
        lines.append(f"Signed-By: {args['keyring']}")
        return ("\n".join(lines) + "\n").encode()

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        lst: FileState = facts["list"]
        key: FileState = facts["key"]
        if args["state"] == "absent":
            if not lst.exists and not key.exists:
                return NoChange(f"repository {args['name']} absent")
            return Change(f"remove repository {args['name']}", f"rm -f -- {q(args['file'])} {q(args['keyring'])}")
        want = self.render(args)
        steps, msgs = [], []
        if not key.is_file or not key.size:
            # download and dearmor into temp files next to the keyring, check, then rename: a failed
            # download never leaves an empty keyring behind (an empty one counts as missing anyway)
            kr = q(args["keyring"])
            steps.append(
                f'mkdir -p -m 0755 "$(dirname -- {kr})"\n'
                f'kdl=$(mktemp "$(dirname -- {kr})/.kprov-key.XXXXXX")\n'
                f'kgpg=$(mktemp "$(dirname -- {kr})/.kprov-key.XXXXXX")\n'
                f'trap \'rm -f "$kdl" "$kgpg"\' EXIT\n'
                f'curl -fsSL --retry 3 --max-time 120 -o "$kdl" -- {q(args["key_url"])}\n'
                f"[ -s \"$kdl\" ] || {{ echo 'kprov: empty key download from '{q(args['key_url'])} >&2; exit 1; }}\n"
                f'gpg --batch --yes --dearmor -o "$kgpg" "$kdl"\n'
                f"[ -s \"$kgpg\" ] || {{ echo 'kprov: the downloaded key is not a PGP key' >&2; exit 1; }}\n"
                f'chmod 0644 "$kgpg"\n'
                f'mv -f -- "$kgpg" {kr}'
            )
            msgs.append(f"fetch key {args['key_url']}")
        if lst.content != want:
            steps.append(write_file_script(args["file"], want, "644", None, None))
            msgs.append(f"write {args['file']}")
        if not steps:
            return NoChange(f"repository {args['name']} present")
        steps.append(apt_retry_fn())
        steps.append(f"kprov_apt_net env {APT_ENV} apt-get update -q {APT_OPTS} >/dev/null")
        return Change(
            "; ".join(msgs), "\n".join(steps), diff=text_diff(args["file"], lst.content if lst.exists else None, want)
        )


@register
class ServiceModule(Module):
    """A systemd unit: enabled/disabled, started/stopped/restarted/reloaded, optional daemon-reload."""

    name = "service"
    params = {
        "name": Param(str, required=True),
        "state": Param(str, choices=("started", "stopped", "restarted", "reloaded")),
        "enabled": Param(bool),
        "daemon_reload": Param(bool, default=False),
    }

    def facts(self, args: Mapping[str, Any]) -> list[FactQuery]:
        unit = args["name"]
        return [
            FactQuery(
                "svc",
                f"service:{unit}",
                f"systemctl show -p LoadState,ActiveState,UnitFileState,SubState -- {q(unit)}",
                parse_systemctl_show,
            )
        ]

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return {f"service:{args['name']}"}

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        st: ServiceState = facts["svc"]
        unit = q(args["name"])
        if not st.exists and not args["daemon_reload"]:
            # in plan, an earlier task (a package) may be about to install the unit
            return fail_on_apply(
                f"{args['name']}: {args['state'] or 'configure'}",
                f"unit {args['name']} not found on the host (install the package that ships it first)",
            )
        steps, msgs = [], []
        if args["daemon_reload"]:
            steps.append("systemctl daemon-reload")
        if args["enabled"] is True and st.enabled not in ("enabled", "static", "enabled-runtime", "alias"):
            steps.append(f"systemctl enable -q -- {unit}")
            msgs.append("enable")
        if args["enabled"] is False and st.enabled == "enabled":
            steps.append(f"systemctl disable -q -- {unit}")
            msgs.append("disable")
        state = args["state"]
        if state == "started" and not st.running:
            steps.append(f"systemctl start -- {unit}")
            msgs.append("start")
        elif state == "stopped" and st.running:
            steps.append(f"systemctl stop -- {unit}")
            msgs.append("stop")
        elif state in ("restarted", "reloaded"):
            verb = "restart" if state == "restarted" or not st.running else "reload-or-restart"
            steps.append(f"systemctl {verb} -- {unit}")
            msgs.append(verb)
        if not msgs:
            return NoChange(f"{args['name']}: {st.active}, {st.enabled}")
        return Change(f"{args['name']}: {', '.join(msgs)}", "\n".join(steps))


@register
class SysctlModule(Module):
    """Kernel parameters: persisted in /etc/sysctl.d/<file> and applied now."""

    name = "sysctl"
    params = {
        "values": Param(dict, required=True),
        "file": Param(str, default="/etc/sysctl.d/99-kprov.conf"),
        "apply": Param(bool, default=True),
    }

    def normalize(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        vals = {}
        for k, v in args["values"].items():
            if isinstance(v, bool):
                v = int(v)
            vals[str(k)] = " ".join(str(v).split())
        args["values"] = vals
        return args

    def facts(self, args: Mapping[str, Any]) -> list[FactQuery]:
        keys = " ".join(q(k) for k in args["values"])
        script = f'for k in {keys}; do printf \'%s=\' "$k"; sysctl -n "$k" 2>/dev/null || echo; done'
        return [
            FactQuery("file", f"file:{args['file']}", file_state_script(args["file"]), parse_file_state),
            FactQuery("live", "sysctl", script, parse_sysctl_values),
        ]

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return {f"file:{args['file']}", "sysctl"}

    def content(self, args: Mapping[str, Any]) -> bytes:
        return ("# managed by kprov\n" + "".join(f"{k} = {v}\n" for k, v in args["values"].items())).encode()

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        st: FileState = facts["file"]
        live: dict[str, str] = facts["live"]
        want = self.content(args)
        steps, msgs = [], []
        if st.content != want:
            steps.append(write_file_script(args["file"], want, "644", None, None))
            msgs.append(f"write {args['file']}")
        stale = {k: v for k, v in args["values"].items() if live.get(k) != v}
        if args["apply"] and stale:
            steps.append(join(["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in stale.items())]))
            msgs.append("apply " + ", ".join(f"{k}={v}" for k, v in stale.items()))
        if not steps:
            return NoChange(f"{len(args['values'])} sysctl values set")
        return Change("; ".join(msgs), "\n".join(steps), diff=text_diff(args["file"], st.content, want))


@register
class KernelModuleModule(Module):
    """Kernel modules: listed in /etc/modules-load.d/<file> (boot) and loaded now."""

    name = "kernel_module"
    params = {
        "names": Param((list, str), required=True),
        "file": Param(str, default="/etc/modules-load.d/kprov.conf"),
    }

    def normalize(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        args["names"] = [str(n) for n in as_list(args["names"])]
        return args

    def facts(self, args: Mapping[str, Any]) -> list[FactQuery]:
        # loaded modules, modules with a /sys/module entry, and built-ins (always "loaded")
        script = (
            "cut -d' ' -f1 /proc/modules 2>/dev/null; ls /sys/module 2>/dev/null; "
            "sed -e 's|.*/||' -e 's|\\.ko.*||' /lib/modules/$(uname -r)/modules.builtin 2>/dev/null; true"
        )
        return [
            FactQuery("file", f"file:{args['file']}", file_state_script(args["file"]), parse_file_state),
            FactQuery("loaded", "kernel_modules", script, parse_loaded_modules),
        ]

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return {f"file:{args['file']}", "kernel_modules"}

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        st: FileState = facts["file"]
        loaded: set[str] = facts["loaded"]
        want = ("# managed by kprov\n" + "".join(f"{n}\n" for n in args["names"])).encode()
        steps, msgs = [], []
        if st.content != want:
            steps.append(write_file_script(args["file"], want, "644", None, None))
            msgs.append(f"write {args['file']}")
        missing = [n for n in args["names"] if n not in loaded and n.replace("-", "_") not in loaded]
        for n in missing:
            steps.append(join(["modprobe", "--", n]))
        if missing:
            msgs.append(f"load {', '.join(missing)}")
        if not steps:
            return NoChange(f"modules loaded: {', '.join(args['names'])}")
        return Change("; ".join(msgs), "\n".join(steps), diff=text_diff(args["file"], st.content, want))


@register
class SwapModule(Module):
    """Swap off now and commented out in /etc/fstab (kubelet refuses to run with swap by default)."""

    name = "swap"
    params = {"state": Param(str, default="off", choices=("off",))}

    def facts(self, args: Mapping[str, Any]) -> list[FactQuery]:
        script = (
            "swapon --show=NAME --noheadings 2>/dev/null; echo --fstab--; "
            "grep -E '^[[:space:]]*[^#[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]]' /etc/fstab "
            "2>/dev/null; true"
        )
        return [FactQuery("swap", "swap", script, parse_swap)]

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return {"swap", "file:/etc/fstab"}

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        st: SwapState = facts["swap"]
        steps, msgs = [], []
        if st.active:
            steps.append("swapoff -a")
            msgs.append(f"swapoff {', '.join(st.active)}")
        if st.fstab_entries:
            steps.append(
                "sed -i.kprov-bak -E "
                "'s@^([[:space:]]*[^#[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]].*)$@# \\1  # disabled by kprov@' "
                "/etc/fstab"
            )
            msgs.append(f"comment out {len(st.fstab_entries)} swap line(s) in /etc/fstab")
        if not steps:
            return NoChange("swap is off")
        return Change(
            "; ".join(msgs),
            "\n".join(steps),
            diff="".join(f"- {ln}\n+ # {ln}  # disabled by kprov\n" for ln in st.fstab_entries),
        )

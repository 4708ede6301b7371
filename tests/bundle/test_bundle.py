"""Bundle build/verify/inspect: real files, real tars, a real HTTP server on 127.0.0.1. No mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from provisioner.bundle import BuildSpec, Skipped, build, dockerarchive, extract, read_manifest, verify
from provisioner.cli.main import main
from provisioner.errors import BundleError, InputError
from tests.bundle import helpers as h

REPO = Path(__file__).resolve().parents[2]
KPROV = REPO / ".venv" / "bin" / "kprov"


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run `kprov ARGV` through the real entry point (one error boundary); (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def assert_one_line_error(rc: int, err: str, expect_rc: int, needle: str) -> None:
    assert rc == expect_rc, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: "), err
    assert needle in lines[0], err
    assert all(line.startswith(("error: ", "hint: ", "  ")) for line in lines), err


@pytest.fixture
def src_dir(tmp_path: Path) -> Path:
    return h.make_source_dir(tmp_path / "src")


@pytest.fixture
def good_bundle(tmp_path: Path, src_dir: Path) -> Path:
    out = tmp_path / "out" / "b.tar"
    build(BuildSpec(kubernetes_version=h.VERSION, from_dir=src_dir, label="test"), out)
    return out


# --- building -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["k.tar", "k.tar.gz"])
def test_build_from_dir_then_verify(tmp_path: Path, src_dir: Path, capsys, name: str) -> None:
    out = tmp_path / "out" / name
    rc, stdout, err = run_cli(
        [
            "bundle",
            "build",
            "--kubernetes-version",
            "v1.20.2",
            "--from-dir",
            str(src_dir),
            "--label",
            "unit test",
            "-o",
            str(out),
            "-q",
        ],
        capsys,
    )
    assert rc == 0, err
    assert f"built {out}" in stdout
    # no temp files left; the whole-archive checksum travels beside the bundle
    assert sorted(p.name for p in out.parent.iterdir()) == [name, f"{name}.sha256"]

    m = verify(out)
    assert (m.format, m.kubernetes_version, m.arch, m.label) == (1, "1.20.2", "amd64", "unit test")
    assert m.image_repository == "k8s.gcr.io"
    assert dict(m.images) == {**h.CORE_REFS, "smoke": h.SMOKE_REF, "coredns": None}
    assert [s.what for s in m.skipped] == ["coredns"]
    kinds = {f.path: (f.kind, f"{f.mode:04o}") for f in m.files}
    assert kinds["bin/kubeadm"] == ("binary", "0755")
    assert kinds["bin/crictl"] == ("tool", "0755")  # a script: a stand-in, not the real binary
    assert kinds["cni/bin/bridge"] == ("cni", "0755")
    assert kinds["images/pause.tar"] == ("image", "0644")
    assert {i.ref: i.path for i in m.image_files}["k8s.gcr.io/pause:3.2"] == "images/pause.tar"
    assert read_manifest(out) == m

    rc, stdout, _ = run_cli(["bundle", "verify", str(out)], capsys)
    assert rc == 0 and stdout.startswith(f"ok: {out}")

    dest = tmp_path / "x"
    assert extract(out, dest) == m
    assert (dest / "bin/kubeadm").read_bytes() == (src_dir / "bin/kubeadm").read_bytes()
    assert os.stat(dest / "bin/kubeadm").st_mode & 0o777 == 0o755
    assert json.loads((dest / "manifest.json").read_text())["kubernetes_version"] == "1.20.2"


def test_manifest_is_first_member_and_members_match(good_bundle: Path) -> None:
    with tarfile.open(good_bundle) as t:
        names = t.getnames()
    m = read_manifest(good_bundle)
    assert names[0] == "manifest.json"
    assert names[1:] == [f.path for f in m.files]


def test_inspect_lists_contents(good_bundle: Path, capsys) -> None:
    rc, stdout, err = run_cli(["bundle", "inspect", str(good_bundle)], capsys)
    assert rc == 0, err
    for needle in ("bin/kubeadm", "cni/bin/portmap", "k8s.gcr.io/etcd:3.4.13-0", "coredns", "1.20.2"):
        assert needle in stdout
    rc, stdout, _ = run_cli(["bundle", "inspect", "--json", str(good_bundle)], capsys)
    assert rc == 0
    assert json.loads(stdout) == read_manifest(good_bundle).to_dict()


def test_rebuild_from_extracted_bundle_keeps_skipped(tmp_path: Path, good_bundle: Path) -> None:
    dest = tmp_path / "x"
    extract(good_bundle, dest)
    m2 = build(
        BuildSpec(kubernetes_version="1.20.2", from_dir=dest, skipped=(Skipped("crictl", "stand-in"),)),
        tmp_path / "again.tar",
    )
    assert {f.path: f.sha256 for f in m2.files} == {f.path: f.sha256 for f in read_manifest(good_bundle).files}
    assert {s.what for s in m2.skipped} == {"coredns", "crictl"}


def test_partial_records_missing_core_images(tmp_path: Path) -> None:
    src = h.make_source_dir(tmp_path / "src", crictl=False, images={"pause": h.CORE_REFS["pause"]})
    m = build(BuildSpec(kubernetes_version="1.20.2", from_dir=src, partial=True), tmp_path / "p.tar")
    assert m.images["pause"] == h.CORE_REFS["pause"] and m.images["etcd"] is None
    assert {"crictl", "etcd", "kube-apiserver", "coredns", "smoke"} <= {s.what for s in m.skipped}
    verify(tmp_path / "p.tar")


def _release_tree(root: Path, *, sha_ok: bool = True) -> None:
    """The official release layout, plus CNI and cri-tools tarballs, under root."""
    rel = root / "release" / f"v{h.VERSION}" / "bin" / "linux" / "amd64"
    for name in ("kubeadm", "kubelet", "kubectl"):
        f = h.fake_elf(rel / name, f"{name} v{h.VERSION}")
        (rel / f"{name}.sha256").write_text(h.sha256_file(f) if sha_ok or name != "kubelet" else "0" * 64)
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"):
        # upstream release tars carry the -amd64 name; the bundle must retag them to what kubeadm pulls
        f = h.image(rel / f"{name}.tar", f"k8s.gcr.io/{name}-amd64:v{h.VERSION}")
        (rel / f"{name}.tar.sha256").write_text(h.sha256_file(f) + "\n")
    cni = h.write_tgz(root / "cni" / "cni-plugins.tgz", {f"./{p}": b"\x7fELF cni " + p.encode() for p in h.CNI_PLUGINS})
    (root / "cni" / "cni-plugins.tgz.sha256").write_text(f"{h.sha256_file(cni)}  cni-plugins.tgz\n")
    h.write_tgz(root / "crictl" / "crictl.tar.gz", {"crictl": b"\x7fELF crictl v1.20.0"})  # no .sha256: allowed
    images = root / "images"
    h.image(images / "pause.tar", h.CORE_REFS["pause"])
    h.image(images / "etcd.tar", h.CORE_REFS["etcd"])
    h.image(images / "smoke.tar", h.SMOKE_REF)


def test_build_from_base_url(tmp_path: Path, capsys) -> None:
    _release_tree(tmp_path / "www")
    out = tmp_path / "out" / "k.tar"
    with h.http_server(tmp_path / "www") as url:
        rc, stdout, err = run_cli(
            [
                "bundle",
                "build",
                "--kubernetes-version",
                "1.20.2",
                "--base-url",
                f"{url}/release",
                "--cni-url",
                f"{url}/cni/cni-plugins.tgz",
                "--crictl-url",
                f"{url}/crictl/crictl.tar.gz",
                "--images-dir",
                str(tmp_path / "www" / "images"),
                "-o",
                str(out),
            ],
            capsys,
        )
    assert rc == 0, err
    assert "sha256 verified" in err and "no checksum published" in err  # progress lines
    m = verify(out)
    assert {f.path for f in m.files} >= {
        "bin/kubeadm",
        "bin/kubelet",
        "bin/kubectl",
        "bin/crictl",
        "cni/bin/bridge",
        "images/kube-apiserver.tar",
        "images/etcd.tar",
    }
    assert m.file("bin/crictl").kind == "binary"
    # downloads arrive without x bits; programs are 0755 in the bundle all the same
    assert {f"{m.file(p).mode:04o}" for p in ("bin/kubeadm", "bin/crictl", "cni/bin/bridge")} == {"0755"}
    assert m.images["kube-apiserver"] == "k8s.gcr.io/kube-apiserver:v1.20.2"
    dest = tmp_path / "x"
    extract(out, dest)
    assert dockerarchive.image_ref(dest / "images" / "kube-apiserver.tar") == "k8s.gcr.io/kube-apiserver:v1.20.2"
    assert [s.what for s in m.skipped] == ["coredns"]


# --- errors: one line, non-zero exit, no traceback, nothing left behind ------------------------------------


def _flip_last_byte(name: str, data: bytes, target: str) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF]) if name == target else data


def _manifest_edit(change):
    """An edit that rewrites manifest.json through change(dict) -> dict."""
    return lambda n, d: json.dumps(change(json.loads(d))).encode() if n == "manifest.json" else d


def _with_file_field(path: str | None, key: str, value):
    return _manifest_edit(
        lambda m: {**m, "files": [{**f, key: value} if path is None or f["path"] == path else f for f in m["files"]]}
    )


VERIFY_CASES = {
    "corrupt file": (lambda n, d: _flip_last_byte(n, d, "bin/kubelet"), "bin/kubelet is corrupt"),
    "wrong checksum in manifest": (_with_file_field("bin/kubeadm", "sha256", "0" * 64), "bin/kubeadm is corrupt"),
    "wrong size": (lambda n, d: d[:-10] if n == "cni/bin/bridge" else d, "cni/bin/bridge has"),
    "missing file": (
        lambda n, d: None if n == "images/etcd.tar" else d,
        "images/etcd.tar is listed in the manifest but missing",
    ),
    "extra file": (None, "extra.bin is not listed in the manifest"),
    "missing manifest": (lambda n, d: None if n == "manifest.json" else d, "no manifest.json inside"),
    "manifest not json": (lambda n, d: b"{not json" if n == "manifest.json" else d, "not valid JSON"),
    "unsupported format": (_manifest_edit(lambda m: {**m, "format": 2}), "unsupported bundle format 2"),
    "bad kind": (_with_file_field(None, "kind", "weird"), "bad kind 'weird'"),
    "bad version in manifest": (
        _manifest_edit(lambda m: {**m, "kubernetes_version": "1.20"}),
        "kubernetes_version '1.20' is not MAJOR.MINOR.PATCH",
    ),
    "unsafe path": (_with_file_field("bin/kubeadm", "path", "../../etc/passwd"), "unsafe path"),
}


@pytest.mark.parametrize("case", sorted(VERIFY_CASES))
def test_verify_errors(case: str, tmp_path: Path, good_bundle: Path, capsys) -> None:
    edit, needle = VERIFY_CASES[case]
    bad = tmp_path / "bad.tar"
    if edit is None:  # extra member appended
        h.rewrite_bundle(good_bundle, bad, lambda n, d: d)
        with tarfile.open(bad, "a") as t:
            extra = tmp_path / "extra.bin"
            extra.write_bytes(b"surprise")
            t.add(extra, "extra.bin")
    else:
        h.rewrite_bundle(good_bundle, bad, edit)
    rc, _, err = run_cli(["bundle", "verify", str(bad)], capsys)
    assert_one_line_error(rc, err, 1, needle)
    with pytest.raises(BundleError):
        verify(bad)


@pytest.mark.parametrize(
    "case, content, needle, code",
    [
        ("not found", None, "does not exist", 2),  # a missing file is bad input, for every command
        ("not a tar", b"hello, this is not an archive" * 100, "not a readable tar", 1),
        ("empty file", b"", "not a readable tar", 1),
    ],
)
def test_verify_unreadable(case: str, content: bytes | None, needle: str, code: int, tmp_path: Path, capsys) -> None:
    path = tmp_path / "b.tar"
    if content is not None:
        path.write_bytes(content)
    for cmd in ("verify", "inspect"):
        rc, _, err = run_cli(["bundle", cmd, str(path)], capsys)
        assert_one_line_error(rc, err, code, needle)


def test_truncated_bundle(tmp_path: Path, good_bundle: Path, capsys) -> None:
    bad = tmp_path / "cut.tar"
    bad.write_bytes(good_bundle.read_bytes()[: good_bundle.stat().st_size // 2])
    rc, _, err = run_cli(["bundle", "verify", str(bad)], capsys)
    assert rc == 1 and "Traceback" not in err and err.startswith("error: ")


BUILD_CASES = [
    # (case, extra argv, setup(src_dir, tmp) -> None, exit code, needle)
    ("bad version string", ["--kubernetes-version", "1.20"], None, 2, "bad Kubernetes version '1.20'"),
    ("version word", ["--kubernetes-version", "latest"], None, 2, "bad Kubernetes version 'latest'"),
    ("binaries of another version", ["--kubernetes-version", "1.21.0"], None, 1, "is not kubeadm v1.21.0"),
    ("missing kubeadm", [], lambda s, t: (s / "bin/kubeadm").unlink(), 2, "no kubeadm among the sources"),
    ("missing core image", [], lambda s, t: (s / "images/etcd.tar").unlink(), 2, "no etcd image"),
    (
        "image of another repo",
        [],
        lambda s, t: h.image(s / "images/pause.tar", "registry.example/pause:3.2"),
        1,
        "not under image repository k8s.gcr.io",
    ),
    (
        "image of another version",
        [],
        lambda s, t: h.image(s / "images/kube-proxy.tar", "k8s.gcr.io/kube-proxy:v1.19.0"),
        1,
        "expected tag v1.20.2",
    ),
    (
        "not a docker archive",
        [],
        lambda s, t: (s / "images/pause.tar").write_bytes(b"junk"),
        1,
        "pause.tar: not a readable docker-archive",
    ),
    ("unexpected file", [], lambda s, t: (s / "README").write_text("hi"), 2, "unexpected file README"),
    (
        "bad image file name",
        [],
        lambda s, t: h.image(s / "images/My Image.tar", "docker.io/x/y:1"),
        2,
        "bad image file name",
    ),
    ("bad skip", ["--skip", "coredns"], None, 2, "bad --skip"),
    ("bad output name", ["-o", "{tmp}/out/bundle.zip"], None, 2, "must end in .tar or .tar.gz"),
    ("from-dir missing", ["--from-dir", "{tmp}/nope"], None, 2, "not a directory"),
]


@pytest.mark.parametrize("case, argv, setup, code, needle", BUILD_CASES, ids=[c[0] for c in BUILD_CASES])
def test_build_errors(case, argv, setup, code, needle, tmp_path: Path, src_dir: Path, capsys) -> None:
    if setup:
        setup(src_dir, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = {"--kubernetes-version": "1.20.2", "--from-dir": str(src_dir), "-o": str(out_dir / "b.tar")}
    rest = []
    it = iter(argv)
    for a in it:
        if a in args:
            args[a] = next(it).format(tmp=tmp_path)
        else:
            rest.append(a if not a.startswith("{") else a.format(tmp=tmp_path))
            if a == "--skip":
                rest.append(next(it))
    flat = [x for kv in args.items() for x in kv]
    rc, _, err = run_cli(["bundle", "build", "-q", *flat, *rest], capsys)
    assert_one_line_error(rc, err, code, needle)
    assert list(out_dir.iterdir()) == []  # nothing half-written, no temp or work files


URL_CASES = [
    ("checksum mismatch", lambda u: ["--base-url", f"{u}/release"], False, "checksum mismatch for"),
    (
        "404 for another version",
        lambda u: ["--base-url", f"{u}/release", "--kubernetes-version", "1.20.3"],
        True,
        "HTTP 404",
    ),
    ("cni tgz missing", lambda u: ["--base-url", f"{u}/release", "--cni-url", f"{u}/cni/nope.tgz"], True, "HTTP 404"),
    ("server down", lambda u: ["--base-url", "http://127.0.0.1:9/release"], True, "download failed"),
    ("bad scheme", lambda u: ["--base-url", "ftp://127.0.0.1/release"], True, "unsupported URL"),
]


@pytest.mark.parametrize("case, argv, sha_ok, needle", URL_CASES, ids=[c[0] for c in URL_CASES])
def test_build_from_url_errors(case, argv, sha_ok, needle, tmp_path: Path, capsys) -> None:
    _release_tree(tmp_path / "www", sha_ok=sha_ok)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with h.http_server(tmp_path / "www") as url:
        extra = argv(url)
        version = "1.20.2"
        if "--kubernetes-version" in extra:
            i = extra.index("--kubernetes-version")
            version = extra[i + 1]
            del extra[i : i + 2]
        rc, _, err = run_cli(
            [
                "bundle",
                "build",
                "-q",
                "--kubernetes-version",
                version,
                *extra,
                "--images-dir",
                str(tmp_path / "www" / "images"),
                "-o",
                str(out_dir / "b.tar"),
            ],
            capsys,
        )
    assert_one_line_error(rc, err, 1, needle)
    assert list(out_dir.iterdir()) == []


def test_extract_refuses_existing_dest(tmp_path: Path, good_bundle: Path) -> None:
    (tmp_path / "there").mkdir()
    with pytest.raises(BundleError, match="already exists"):
        extract(good_bundle, tmp_path / "there")


def test_extract_leaves_nothing_on_corrupt_bundle(tmp_path: Path, good_bundle: Path) -> None:
    bad = h.rewrite_bundle(good_bundle, tmp_path / "bad.tar", lambda n, d: _flip_last_byte(n, d, "bin/kubectl"))
    with pytest.raises(BundleError, match="bin/kubectl is corrupt"):
        extract(bad, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dest")]


def test_library_errors_are_typed(tmp_path: Path, src_dir: Path) -> None:
    with pytest.raises(InputError):
        build(BuildSpec(kubernetes_version="one.two", from_dir=src_dir), tmp_path / "x.tar")
    with pytest.raises(BundleError, match="bundle not found"):
        read_manifest(tmp_path / "missing.tar")


def test_docker_archive_is_deterministic(tmp_path: Path) -> None:
    a, b = h.image(tmp_path / "a.tar", "k8s.gcr.io/pause:3.2"), h.image(tmp_path / "b.tar", "k8s.gcr.io/pause:3.2")
    assert a.read_bytes() == b.read_bytes()
    assert dockerarchive.image_refs(a) == ["k8s.gcr.io/pause:3.2"]


@pytest.mark.skipif(not KPROV.exists(), reason="needs the repo venv's kprov entry point")
def test_real_process_exit_codes(tmp_path: Path, good_bundle: Path) -> None:
    ok = subprocess.run([str(KPROV), "bundle", "verify", str(good_bundle)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: ")
    missing = subprocess.run(
        [str(KPROV), "bundle", "verify", str(tmp_path / "nope.tar")], capture_output=True, text=True
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ") and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = subprocess.run(
        [
            str(KPROV),
            "bundle",
            "build",
            "--kubernetes-version",
            "x",
            "-o",
            str(tmp_path / "o.tar"),
            "--from-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and not (tmp_path / "o.tar").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

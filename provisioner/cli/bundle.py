"""`kprov bundle ...`: build, verify and inspect offline bundles."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from provisioner.bundle import BuildSpec, Manifest, Skipped, build, read_manifest, verify
from provisioner.cli.common import StderrHandler
from provisioner.errors import InputError


def _progress_logging(quiet: bool) -> None:
    """Library progress (logging) on stderr for the duration of this command."""
    if quiet:
        return
    logger = logging.getLogger("provisioner.bundle")
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("  %(message)s"))
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    click.get_current_context().call_on_close(undo)


def _parse_skip(values: tuple[str, ...]) -> tuple[Skipped, ...]:
    out = []
    for v in values:
        what, sep, why = v.partition("=")
        if not sep or not what.strip() or not why.strip():
            raise InputError(f"bad --skip {v!r}", hint="use --skip WHAT=WHY, e.g. --skip 'coredns=not packaged'")
        out.append(Skipped(what.strip(), why.strip()))
    return tuple(out)


def _summary(m: Manifest) -> str:
    return (
        f"kubernetes {m.kubernetes_version} {m.arch}, {len(m.files)} files, "
        f"{len(m.image_files)} images, {m.total_size / (1 << 20):.1f} MiB"
    )


@click.group()
def bundle() -> None:
    """Offline bundles: Kubernetes binaries, CNI plugins and images in one archive."""


@bundle.command("build")
@click.option("--kubernetes-version", "version", required=True, help="e.g. 1.20.2 (a leading v is accepted).")
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(path_type=Path),
    help="Bundle file to write (.tar or .tar.gz); written atomically.",
)
@click.option("--arch", default="amd64", show_default=True)
@click.option(
    "--from-dir",
    type=click.Path(path_type=Path),
    help="Directory laid out like a bundle: bin/, cni/bin/ (or cni/), images/*.tar, tools/.",
)
@click.option(
    "--base-url",
    help="Release base URL: {URL}/v{V}/bin/linux/{ARCH}/{kubeadm,kubelet,kubectl} "
    "(+ .sha256 files, checked when present).",
)
@click.option(
    "--release-images/--no-release-images",
    default=True,
    show_default=True,
    help="With --base-url, also fetch kube-apiserver/-controller-manager/-scheduler/-proxy .tar.",
)
@click.option("--cni-url", help="CNI plugins .tgz (URL.sha256 checked when present).")
@click.option("--crictl-url", help="crictl binary or cri-tools .tar.gz (URL.sha256 checked when present).")
@click.option(
    "--images-dir",
    "images_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Directory of docker-archive *.tar images (file stem = key, e.g. pause.tar). Repeatable.",
)
@click.option(
    "--image-repository",
    default="k8s.gcr.io",
    show_default=True,
    help="Registry prefix all control-plane images must use (kubeadm imageRepository).",
)
@click.option("--label", default="", help="Free text recorded in the manifest (e.g. 'lab build, not upstream').")
@click.option(
    "--skip",
    "skips",
    multiple=True,
    metavar="WHAT=WHY",
    help="Record something left out (or shipped as a stand-in) and why. Repeatable.",
)
@click.option("--partial", is_flag=True, help="Allow missing control-plane images (recorded as skipped).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds per download.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def build_cmd(
    version: str,
    output: Path,
    arch: str,
    from_dir: Path | None,
    base_url: str | None,
    release_images: bool,
    cni_url: str | None,
    crictl_url: str | None,
    images_dirs: tuple[Path, ...],
    image_repository: str,
    label: str,
    skips: tuple[str, ...],
    partial: bool,
    timeout: float,
    quiet: bool,
) -> None:
    """Build a bundle from a local directory and/or a release URL."""
    _progress_logging(quiet)
    spec = BuildSpec(
        kubernetes_version=version,
        arch=arch,
        label=label,
        image_repository=image_repository,
        from_dir=from_dir,
        base_url=base_url,
        release_images=release_images,
        cni_url=cni_url,
        crictl_url=crictl_url,
        images_dirs=tuple(images_dirs),
        skipped=_parse_skip(skips),
        partial=partial,
        timeout=timeout,
    )
    manifest = build(spec, output)
    click.echo(f"built {output}: {_summary(manifest)}")
    for s in manifest.skipped:
        click.echo(f"  skipped {s.what}: {s.why}")


@bundle.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def verify_cmd(file: Path) -> None:
    """Check every file of a bundle against its manifest (sha256 and size)."""
    manifest = verify(file)
    click.echo(f"ok: {file}: {_summary(manifest)} verified")


@bundle.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print manifest.json as is.")
def inspect_cmd(file: Path, as_json: bool) -> None:
    """Show a bundle's table of contents (reads only the manifest; use verify to check the files)."""
    m = read_manifest(file)
    if as_json:
        click.echo(m.to_json(), nl=False)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]{file}[/]  format {m.format}  kubernetes {m.kubernetes_version}  {m.arch}  created {m.created}"
    )
    if m.label:
        console.print(f"label: {m.label}")
    console.print(f"image repository: {m.image_repository}")
    files = Table("path", "kind", "mode", "size", "sha256", title="files", title_justify="left")
    for f in m.files:
        files.add_row(f.path, f.kind, f"{f.mode:04o}", f"{f.size:,}", f.sha256[:16])
    console.print(files)
    images = Table("key", "ref", "file", title="images", title_justify="left")
    paths = {i.ref: i.path for i in m.image_files}
    for key, ref in m.images.items():
        images.add_row(key, ref or "[dim]—[/]", paths.get(ref, "") if ref else "")
    console.print(images)
    if m.skipped:
        skipped = Table("what", "why", title="skipped / stand-ins", title_justify="left")
        for s in m.skipped:
            skipped.add_row(s.what, s.why)
        console.print(skipped)
    console.print(_summary(m))


__all__ = ["bundle"]

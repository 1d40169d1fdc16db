"""The sandbox image: one root file system for both backends, built offline.

The image is the root file system of every sandbox and holds only what a job runs (the
interpreter, its standard library, the quant libraries, the SDK, their bytecode, the
shared libraries they link to, the time zones: ``contents.py``); nothing else of the
host: no shell, no other toolchains, none of the development environment's packages.

It is built offline from this host, no registry needed: ``rootfs.py`` stores it
content-addressed on disk (the gVisor backend's read-only root), and :func:`docker_image`
imports the same tree into the Docker engine. ``deploy/sandbox/Dockerfile`` builds the
same tree on a host with a registry. ``pitwall image build`` does both ahead of time
(:func:`build_image`); a backend builds what is missing on first use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitwall.errors import SandboxError
from pitwall_executor.sandbox import oci
from pitwall_executor.sandbox.distributions import distributions
from pitwall_executor.sandbox.rootfs import Rootfs, RootfsStore

if TYPE_CHECKING:
    import docker

#: The Docker repository of the imported image; each image is tagged with its digest.
REPOSITORY = "pitwall-sandbox"
#: The Docker label holding the image's rootfs digest.
ROOTFS_LABEL = "pitwall.rootfs"


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def write_tar(rootfs: Rootfs, path: Path) -> None:
    """The image's tree as a reproducible tar (sorted, root-owned, mtime 0)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for arc in rootfs.manifest():
            tar.add(rootfs.path / arc.lstrip("/"), arcname=arc.lstrip("/"), recursive=False,
                    filter=_normalise)


def _import_changes(rootfs: Rootfs) -> list[str]:
    env = [e.split("=", 1) for e in oci.environment({}) if not e.startswith("HOME=")]
    return [*(f"ENV {k}={v}" for k, v in env), "ENV HOME=/scratch",
            f"LABEL {ROOTFS_LABEL}={rootfs.digest}",
            f"USER {oci.SANDBOX_UID}:{oci.SANDBOX_UID}", "WORKDIR /scratch",
            'CMD ["python", "-S", "-m", "pitwall.sandbox.runner", "/job"]']


def docker_image(client: docker.DockerClient, rootfs: Rootfs, *,
                 store: RootfsStore | None = None) -> str:
    """The id of ``rootfs`` as a Docker image (``pitwall-sandbox:<digest>``), imported
    now (``docker import``, no registry; ~6 s) if the engine lacks it. ``store``: then
    drop the engine's other sandbox images that no live process of this host holds
    (an image is a full copy: 0.75 GB each; one a container still uses stays)."""
    import docker.errors

    tag = rootfs.digest.removeprefix("sha256:")[:16]
    with contextlib.suppress(docker.errors.ImageNotFound):
        found = client.images.get(f"{REPOSITORY}:{tag}")
        if found.labels.get(ROOTFS_LABEL) == rootfs.digest and found.id is not None:
            return found.id
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".import-", dir=rootfs.path.parent.parent) as tmp:
        write_tar(rootfs, Path(tmp) / "rootfs.tar")
        client.api.import_image_from_file(str(Path(tmp) / "rootfs.tar"), repository=REPOSITORY,
                                          tag=tag, changes=_import_changes(rootfs))
    image_id = client.images.get(f"{REPOSITORY}:{tag}").id
    if image_id is None:
        raise SandboxError(f"docker import of the sandbox image {rootfs.digest} gave no id")
    logging.getLogger(__name__).info("sandbox image %s imported into Docker in %.1f s",
                                     rootfs.digest, time.monotonic() - started)
    if store is not None:
        _drop_old_images(client, store, keep=rootfs.digest)
    return image_id


def _drop_old_images(client: docker.DockerClient, store: RootfsStore, *, keep: str) -> None:
    import docker.errors

    for old in client.images.list(filters={"label": ROOTFS_LABEL}):
        digest = old.labels.get(ROOTFS_LABEL, "")
        rootfs = store.get(digest)
        if digest == keep or (rootfs is not None and rootfs.held()):
            continue
        with contextlib.suppress(docker.errors.APIError):  # in use by a container: kept
            client.images.remove(str(old.id))


def build_image(out_dir: Path, *, tag: str | None = None, docker_too: bool = True,
                ) -> dict[str, Any]:
    """Build the image ahead of time (``pitwall image build``): the rootfs in the
    store, then the Docker image; the record, also written to ``out_dir/image.json``
    with the manifest at ``out_dir/manifest.json``."""
    store = RootfsStore()
    started = time.monotonic()
    layout = oci.PythonLayout.of_this_interpreter()
    rootfs = store.ensure(layout)
    manifest = rootfs.manifest()
    files = [e for e in manifest.values() if e["type"] == "file"]
    record: dict[str, Any] = {
        "digest": rootfs.digest, "rootfs": str(rootfs.path), "entries": len(manifest),
        "files": len(files), "bytes": sum(int(e["size"]) for e in files),
        "build_s": round(time.monotonic() - started, 1),
        "missing_libraries": distributions()[1], "docker_image": None, "tag": None}
    if docker_too:
        import docker

        client = docker.from_env()
        started = time.monotonic()
        record["docker_image"] = docker_image(client, rootfs, store=store)
        record["docker_s"] = round(time.monotonic() - started, 1)
        if tag is not None:
            repository, _, version = tag.partition(":")
            client.images.get(record["docker_image"]).tag(repository, version or "latest")
            record["tag"] = tag
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(rootfs.manifest_path, out_dir / "manifest.json")
    (out_dir / "image.json").write_text(json.dumps(record, indent=1))
    return record

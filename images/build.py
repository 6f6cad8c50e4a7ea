#!/usr/bin/env python3
"""Build jhub-cloud's container images: lab, lab-gpu, hub (see images/README.md).

    images/build.py lab     [--tag jhub-cloud/lab:latest] [--base IMAGE] [--jupyterhub-version V]
    images/build.py lab-gpu [--tag jhub-cloud/lab-gpu:latest] [--base CUDA-IMAGE]
    images/build.py hub     [--tag jhub-cloud/hub:latest] [--base IMAGE] [--no-proxy] [--hub-user U]

What it does that a plain `docker build` cannot:
- stages a build context in a temporary folder: the image's Dockerfile, images/with-ca, and the
  source it installs (the sts-wire distribution; for the hub also jhub-cloud);
- hands the host's extra CA certificates (/usr/local/share/ca-certificates/*.crt, or --ca-dir)
  to the build as the BuildKit secret ``extra_ca``: the package index is reachable through them,
  and they never land in the context, a layer or the repository;
- passes the JupyterHub version of the hub's environment (the Python running this script) so
  that jupyterhub-singleuser in the lab image matches the hub;
- builds with BuildKit and host networking (dockerd may have no bridge). A second build with the
  same inputs is served from the build cache.

Only the standard library is used: any python3 of the host can run it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CA_DIR = Path("/usr/local/share/ca-certificates")
STS_WIRE_DIST = REPO / "sts_wire"
IMAGES = ("lab", "lab-gpu", "hub")
DEFAULT_TAGS = {"lab": "jhub-cloud/lab:latest", "lab-gpu": "jhub-cloud/lab-gpu:latest",
                "hub": "jhub-cloud/hub:latest"}
CUDA_BASE = "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"
# Build output we never need in a context: caches, build leftovers, editable-install metadata.
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".pytest_cache",
                                "node_modules", ".git")


class BuildError(RuntimeError):
    pass


def docker_cli() -> str:
    """$DOCKER, else Debian's CLI (it matches Debian's dockerd), else `docker` from PATH."""
    if os.environ.get("DOCKER"):
        return os.environ["DOCKER"]
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def hub_jupyterhub_version() -> str:
    try:
        return importlib.metadata.version("jupyterhub")
    except importlib.metadata.PackageNotFoundError:
        raise BuildError("JupyterHub is not installed in this Python, so the hub's version is unknown: "
                         "run this script with the hub's Python or pass --jupyterhub-version") from None


def stage_sts_wire(dest: Path) -> None:
    """The sts-wire distribution (the folder sts_wire/ with its own pyproject.toml) into ``dest``."""
    if not (STS_WIRE_DIST / "pyproject.toml").is_file():
        raise BuildError(f"{STS_WIRE_DIST}/pyproject.toml is missing: the sts-wire distribution is built from there")
    shutil.copytree(STS_WIRE_DIST, dest, ignore=IGNORE)


def stage_jhub_cloud(dest: Path) -> None:
    """The jhub-cloud distribution (the repository's top level, without tests and caches; it
    depends on sts-wire, which the build installs from src/sts-wire)."""
    dest.mkdir(parents=True)
    for f in ("setup.cfg", "pyproject.toml", "README.md", "setup.py", "MANIFEST.in"):
        if (REPO / f).exists():
            shutil.copy2(REPO / f, dest / f)
    for d in ("jhub_cloud", "config"):
        if (REPO / d).is_dir():
            shutil.copytree(REPO / d, dest / d, ignore=IGNORE)


def extra_ca_bundle(ca_dir: Path, into: Path) -> Path | None:
    """The extra CA certificates in one file (mode 600, outside the context), or None."""
    certs = sorted(ca_dir.glob("*.crt")) if ca_dir.is_dir() else []
    if not certs:
        return None
    out = into / "extra_ca.crt"
    with open(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        for c in certs:
            f.write(c.read_text().strip() + "\n")
    return out


def build(image: str, tag: str, build_args: dict[str, str], ca_dir: Path = CA_DIR, quiet: bool = False,
          no_cache: bool = False, log=None) -> str:
    """Build one image; returns BuildKit's plain progress output (it shows CACHED steps)."""
    with tempfile.TemporaryDirectory(prefix=f"jhub-cloud-build-{image}-") as tmp:
        tmp = Path(tmp)
        ctx = tmp / "context"
        ctx.mkdir()
        shutil.copy2(HERE / image / "Dockerfile", ctx / "Dockerfile")
        shutil.copy2(HERE / "with-ca", ctx / "with-ca")
        (ctx / "src").mkdir()
        if image in ("lab", "hub"):
            stage_sts_wire(ctx / "src" / "sts-wire")
        if image == "hub":
            stage_jhub_cloud(ctx / "src" / "jhub-cloud")
        argv = [docker_cli(), "build", "--network", "host", "--progress", "plain", "-t", tag]
        if no_cache:
            argv.append("--no-cache")
        ca = extra_ca_bundle(ca_dir, tmp)
        if ca:
            argv += ["--secret", f"id=extra_ca,src={ca}"]
        for k, v in build_args.items():
            argv += ["--build-arg", f"{k}={v}"]
        argv.append(str(ctx))
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        lines = []
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as p:
            for line in p.stdout:
                lines.append(line)
                if log and not quiet:
                    log(line.rstrip("\n"))
        output = "".join(lines)
        if p.returncode != 0:
            raise BuildError(f"docker build of {image} failed ({p.returncode}):\n" + "".join(lines[-40:]))
        return output


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", choices=IMAGES)
    ap.add_argument("--tag", help="image name:tag (default jhub-cloud/<image>:latest)")
    ap.add_argument("--base", help="base image (lab: a Debian/Ubuntu image, default python:3.11-slim-bookworm; "
                    f"lab-gpu: a CUDA image, default {CUDA_BASE}; hub: default python:3.11-slim-bookworm, "
                    "or the Zero to JupyterHub hub image)")
    ap.add_argument("--jupyterhub-version", help="default: the version installed with this Python (the hub's)")
    ap.add_argument("--no-proxy", action="store_true",
                    help="hub: leave out configurable-http-proxy (Kubernetes runs the proxy in its own pod)")
    ap.add_argument("--hub-user", default="root",
                    help="hub: the user the hub runs as (1000 for the Zero to JupyterHub base image)")
    ap.add_argument("--ca-dir", type=Path, default=CA_DIR, help=f"extra CA certificates (*.crt; default {CA_DIR})")
    ap.add_argument("--no-cache", action="store_true", help="ignore the build cache")
    ap.add_argument("--quiet", "-q", action="store_true", help="print only the tag at the end")
    a = ap.parse_args(argv)
    tag = a.tag or DEFAULT_TAGS[a.image]

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        version = a.jupyterhub_version or hub_jupyterhub_version()
        args = {"JUPYTERHUB_VERSION": version}
        if a.image == "lab-gpu":
            # The lab recipe on a CUDA base, then the GPU settings on top (images/lab-gpu/Dockerfile).
            stage = tag.rsplit(":", 1)[0] + "-stage:" + (tag.rsplit(":", 1)[1] if ":" in tag else "latest")
            build("lab", stage, {**args, "BASE_IMAGE": a.base or CUDA_BASE}, a.ca_dir, a.quiet, a.no_cache, log)
            build("lab-gpu", tag, {"LAB_IMAGE": stage}, a.ca_dir, a.quiet, a.no_cache, log)
        else:
            if a.base:
                args["BASE_IMAGE"] = a.base
            if a.image == "hub":
                args["INSTALL_PROXY"] = "0" if a.no_proxy else "1"
                args["HUB_USER"] = a.hub_user
            build(a.image, tag, args, a.ca_dir, a.quiet, a.no_cache, log)
    except BuildError as e:
        print(f"build.py: {e}", file=sys.stderr)
        return 1
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The suite's own lab image (images/lab/Dockerfile), built by images/build.py FROM the testbed's
locally made Debian base image (no registry needed), under the testbed's dockerd.

The image and BuildKit's cache live in the testbed dockerd's data root (paths.CACHE), so a later
session's build is served from the cache in seconds; only a change of the Dockerfile, the
sts-wire source or the JupyterHub version rebuilds (just the layers concerned).

Fixture ``suite_lab_image`` -> ``BuiltImage`` (``.tag``, ``.output``: BuildKit's plain progress).
Run it like any image: ``dockerd.docker("run", "--rm", "--network", "host", img.tag, ...)``; its
default command is ``sts-wire run --spec env:STS_WIRE_SPEC -- jupyterhub-singleuser`` under tini,
as user jovyan (uid 1000), with its own venv /opt/lab/bin first in PATH.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from .docker import Dockerd, terminal
from .paths import REPO, VENV_BIN

SUITE_LAB_IMAGE = "jhub-cloud/lab:testbed"
SUITE_HUB_IMAGE = "jhub-cloud/hub:testbed"
BUILD_SCRIPT = REPO / "images" / "build.py"


@dataclass
class BuiltImage:
    tag: str
    output: str        # BuildKit's plain progress output
    seconds: float


def build_image(dockerd: Dockerd, image: str, tag: str, base: str, say=print,
                timeout: float = 1800) -> BuiltImage:
    """Run images/build.py with the hub's Python (so its JupyterHub version is the hub's)."""
    python = VENV_BIN / "python"
    argv = [str(python if python.exists() else sys.executable), str(BUILD_SCRIPT), image,
            "--tag", tag, "--base", base]
    say(f"images/build.py {image} --base {base} -> {tag}")
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       env={**_clean_env(), **dockerd.env})
    if r.returncode != 0:
        raise RuntimeError(f"images/build.py {image} failed ({r.returncode}):\n{r.stderr[-3000:]}\n"
                           f"{r.stdout[-3000:]}")
    return BuiltImage(tag, r.stdout, time.monotonic() - t0)


def _clean_env() -> dict[str, str]:
    import os

    # The build gets the host's CAs through its secret, never through our environment.
    return {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}


def cached_steps(output: str) -> tuple[list[str], list[str]]:
    """(steps served from the cache, steps that ran) of a Dockerfile, from BuildKit's output:
    a step is announced as ``#8 [stage-0 4/7] RUN ...`` and ends as ``#8 CACHED`` or ``#8 DONE 39.2s``."""
    names, cached, done = {}, set(), set()
    for line in output.splitlines():
        num, _, rest = line.partition(" ")
        if not (num.startswith("#") and num[1:].isdigit()):
            continue
        if rest.startswith("[") and "] " in rest and not rest.startswith("[internal]"):
            names.setdefault(num, rest)
        elif rest == "CACHED":
            cached.add(num)
        elif rest.startswith("DONE"):
            done.add(num)
    steps = [n for n, title in names.items() if not title.split("] ", 1)[1].startswith("FROM ")]
    return ([names[n] for n in steps if n in cached],
            [names[n] for n in steps if n not in cached and n in done])


@pytest.fixture(scope="session")
def suite_lab_image(dockerd, base_image, request) -> BuiltImage:
    """images/lab built FROM the testbed base image (cached in the testbed's data root)."""
    return build_image(dockerd, "lab", SUITE_LAB_IMAGE, base_image,
                       say=terminal(request.config, "lab image"))


@pytest.fixture(scope="session")
def suite_hub_image(dockerd, base_image, request) -> BuiltImage:
    """images/hub (JupyterHub + jhub-cloud + configurable-http-proxy) FROM the testbed base image."""
    return build_image(dockerd, "hub", SUITE_HUB_IMAGE, base_image, say=terminal(request.config, "hub image"))

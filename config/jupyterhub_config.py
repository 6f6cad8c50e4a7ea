"""JupyterHub entry point of jhub-cloud: `jupyterhub -f config/jupyterhub_config.py`.

Everything comes from one YAML file, `$JHUB_CLOUD_CONFIG` (default /etc/jhub-cloud/jhub-cloud.yaml),
validated against the suite's schema before the hub starts; `jhub-cloud check FILE` shows the same
errors without starting anything.
"""

import os
import sys

from jhub_cloud.config import ConfigError, load, resolve_secret
from jhub_cloud.hub_config import apply
from jhub_cloud.operations import apply_operations
from jhub_cloud.spawner.hub_setup import apply_spawner

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

path = os.environ.get("JHUB_CLOUD_CONFIG", "/etc/jhub-cloud/jhub-cloud.yaml")
try:
    suite = load(path)
except ConfigError as e:
    sys.exit(f"jhub-cloud: {path} is not valid:\n{e}")
apply(c, suite.hub, suite.auth, resolve_secret)
apply_spawner(c, suite)
apply_operations(c, suite, resolve_secret)

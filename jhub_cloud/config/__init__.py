"""The jhub-cloud configuration file: one YAML file, one schema, every problem reported at once.

    cfg = load("/etc/jhub-cloud/config.yaml")   # raises ConfigError listing all problems
    secret = resolve_secret(cfg.auth["client_secret"], "auth.client_secret")
"""

from .docs import reference_markdown
from .errors import ConfigError, Problem, SecretError, format_path
from .loader import from_dict, load, loads, problems_in
from .model import CHOICE_NAMES, Choice, Config, GroupLimits, Mount, Profile
from .schema import schema
from .secret_refs import resolve_secret, secret_problems
from .units import format_memory, parse_memory

__all__ = [
    "CHOICE_NAMES",
    "Choice",
    "Config",
    "ConfigError",
    "GroupLimits",
    "Mount",
    "Problem",
    "Profile",
    "SecretError",
    "format_memory",
    "format_path",
    "from_dict",
    "load",
    "loads",
    "parse_memory",
    "problems_in",
    "reference_markdown",
    "resolve_secret",
    "schema",
    "secret_problems",
]

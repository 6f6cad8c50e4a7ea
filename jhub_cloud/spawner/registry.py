"""Which child spawner and which builder serve each backend name.

A backend is the pair (adapter class, builder function). Their modules are imported only when a
server of that backend is started, so a site that uses only `local` never imports kubespawner.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

# backend name -> (adapter module, class name in it); the builder is builders/<backend>.py.
ADAPTERS = {
    "local": ("jhub_cloud.spawner.backends.local", "LocalChild"),
    "docker": ("jhub_cloud.spawner.backends.docker", "DockerChild"),
    "slurm": ("jhub_cloud.spawner.backends.slurm", "SlurmChild"),
    "kubernetes": ("jhub_cloud.spawner.backends.kubernetes", "KubernetesChild"),
}


class BackendUnavailable(RuntimeError):
    """The backend's adapter or builder is not installed in this version of jhub-cloud."""


@dataclass(frozen=True)
class Backend:
    name: str
    child_class: type
    child_settings: Callable[..., dict]  # builders/<name>.py child_settings

    @property
    def class_path(self) -> str:
        return f"{self.child_class.__module__}.{self.child_class.__qualname__}"


def load_backend(name: str) -> Backend:
    """The backend `name`, or BackendUnavailable saying what is missing."""
    if name not in ADAPTERS:
        raise BackendUnavailable(
            f"unknown backend {name!r}; the backends are: {', '.join(ADAPTERS)}"
        )
    module_name, class_name = ADAPTERS[name]
    try:
        adapter = importlib.import_module(module_name)
        builder = importlib.import_module(f"jhub_cloud.spawner.builders.{name}")
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("jhub_cloud.spawner."):
            raise  # a missing third-party package is a different problem: show it as it is
        raise BackendUnavailable(
            f"the {name} backend is not available in this installation of jhub-cloud "
            f"({e.name} is missing); ask the hub's administrators to choose another profile "
            "or install a version that has it"
        ) from None
    child_class = getattr(adapter, "CHILD_CLASS", None) or getattr(adapter, class_name, None)
    if child_class is None:
        child_class = _only_spawner_class(adapter)
    settings = getattr(builder, "child_settings", None)
    if child_class is None or settings is None:
        raise BackendUnavailable(
            f"the {name} backend is incomplete in this installation ({module_name}.{class_name} "
            f"or jhub_cloud.spawner.builders.{name}.child_settings is missing)"
        )
    return Backend(name, child_class, settings)


def _only_spawner_class(module) -> type | None:
    """The one Spawner subclass an adapter module defines, when it names it differently."""
    from jupyterhub.spawner import Spawner

    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, Spawner) and v.__module__ == module.__name__]
    return found[0] if len(found) == 1 else None

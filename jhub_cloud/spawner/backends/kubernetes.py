"""KubernetesChild: kubespawner.KubeSpawner with the one change CloudSpawner needs.

KubeSpawner works out the pod, PVC and Secret names from their templates in __init__, before
CloudSpawner sets the builder's settings (builders/kubernetes.py) on the child. Here the names
follow their templates whenever those change, so the settings can be applied after construction.
Everything else (start, progress from the pod's Events, poll, stop, state) is KubeSpawner's own.

Construct it in async code (inside the hub's event loop): KubeSpawner's __init__ loads the
cluster configuration (in-cluster, or $KUBECONFIG) and takes a client bound to the running loop.
"""

from __future__ import annotations

from kubespawner import KubeSpawner
from traitlets import observe


class KubernetesChild(KubeSpawner):
    @observe("pod_name_template", "pvc_name_template", "secret_name_template", "namespace")
    def _names_follow_templates(self, change):
        if not hasattr(self, "pod_name"):
            return  # still in __init__, which computes them itself
        self.pod_name = self._expand_user_properties(self.pod_name_template)
        self.dns_name = self.dns_name_template.format(namespace=self.namespace, name=self.pod_name)
        self.secret_name = self._expand_user_properties(self.secret_name_template)
        self.pvc_name = self._expand_user_properties(self.pvc_name_template)


CHILD_CLASS = KubernetesChild

"""A loopback Kubernetes API server (core/v1) for tests: no cluster can run on this machine.

It speaks the real wire protocol that kubernetes_asyncio (and so KubeSpawner) uses, over plain
HTTP on 127.0.0.1 with a bearer token, and behaves like kube-apiserver where spawners notice:

- REST for pods, persistentvolumeclaims, services, secrets, configmaps, events and
  serviceaccounts in namespaces (list with labelSelector/fieldSelector, watch streams with
  resourceVersion and timeoutSeconds, create, read, merge-patch, delete), namespaces, /version;
- every created object is validated against the official OpenAPI schemas (kubernetes-validate,
  strict: unknown fields are errors) of `version`, plus the rules the schemas miss and
  kube-apiserver enforces (`object_problems`: quantities, name and label lengths, mounts naming
  missing volumes, duplicate volumes, extended resources whose request differs from the limit);
  an invalid object gets 422 with a Status saying why, and is not stored;
- a fake kubelet takes each pod through the real phases and Events (Scheduled, Pulling, Pulled,
  Created, Started) to Running and Ready with podIP 127.0.0.1; a deleted pod is Terminating for
  `delete_delay` seconds before it goes. `pod_behaviour` makes new pods instead stay Pending
  (`unschedulable`, with a FailedScheduling event) or fail to pull (`image-pull-error`);
  `terminate_pod()` ends a running pod's container with an exit code;
- `on_running(pod)`, when set, is called (in a worker thread) as each pod turns Running: a test
  that needs a server to answer (a hub test) starts it there, on 127.0.0.1 and the pod's port,
  with the pod's environment; nothing else runs the pod's command;
- every request is recorded (`requests`: method, path, query, JSON body).

A hub started as a separate process reaches the same server through the kubeconfig file
(`KUBECONFIG=<path>`): the server thread keeps running until stop().

Use from any test, sync or async: the server runs on its own thread and event loop.

    api = KubeApi(namespaces=("jhub",)).start()
    api.write_kubeconfig(path)            # a kubeconfig for clients (server URL and token)
    ...                                   # point KubeSpawner (or a hub) at it
    api.objects("pods", "jhub")           # {name: object} as stored now (copies)
    api.requests_for("POST", "pods")      # what clients sent
    api.stop()

`tests/test_kube_spawner.py` has the pytest fixture (`kube_api`) that also points
kubernetes_asyncio at it and clears KubeSpawner's shared clients and reflectors.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import json
import os
import re
import secrets
import threading
import uuid
from pathlib import Path

import pytest
from aiohttp import web

KINDS = {
    "pods": "Pod",
    "services": "Service",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "secrets": "Secret",
    "configmaps": "ConfigMap",
    "events": "Event",
    "serviceaccounts": "ServiceAccount",
}
VERSION = "1.30.0"
TEST_VERSIONS = ("1.30.0", "1.33.0", "1.37.0")  # the schemas every generated object must pass

# --- rules kube-apiserver enforces and the OpenAPI schemas do not ------------------------------
_QUANTITY = re.compile(
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_NATIVE_RESOURCES = {"cpu", "memory", "ephemeral-storage", "storage"}
# Where the middleware leaves the parsed JSON body for the handlers.
BODY = web.RequestKey("body", object) if hasattr(web, "RequestKey") else "body"


def quantity_ok(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value >= 0 and value == value and value not in (float("inf"),)
    return isinstance(value, str) and bool(_QUANTITY.match(value))


def _label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"label key {key!r}: prefix must be a DNS subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return f"label key {key!r}: name must be at most 63 letters, digits, '-', '_', '.'"
    return None


def object_problems(obj: dict) -> list[str]:
    """What kube-apiserver would refuse in `obj` beyond the OpenAPI schema."""
    out = []
    kind = obj.get("kind")
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    if kind in ("Pod", "Service", "Namespace"):
        # Pod names are subdomains, but the pod's hostname is its name: keep it a label.
        if len(name) > 63 or not _DNS_LABEL.match(name):
            out.append(f"metadata.name {name!r}: must be a DNS label (at most 63 characters)")
    elif kind is not None and (len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
        out.append(f"metadata.name {name!r}: must be a DNS subdomain")
    for key, value in (meta.get("labels") or {}).items():
        if problem := _label_key_problem(key):
            out.append(f"metadata.labels: {problem}")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            out.append(f"metadata.labels[{key}]: value {value!r} is not a label value")
    for key in meta.get("annotations") or {}:
        if problem := _label_key_problem(key):
            out.append(f"metadata.annotations: {problem}")
    if kind == "Pod":
        out += _pod_problems(obj.get("spec") or {})
    if kind == "PersistentVolumeClaim":
        for key, value in ((obj.get("spec") or {}).get("resources") or {}).get("requests", {}).items():
            if not quantity_ok(value):
                out.append(f"spec.resources.requests[{key}]: {value!r} is not a quantity")
    return out


def _pod_problems(spec: dict) -> list[str]:
    out = []
    volumes = [v.get("name") for v in spec.get("volumes") or []]
    for name in {v for v in volumes if volumes.count(v) > 1}:
        out.append(f"spec.volumes: {name!r} is defined more than once")
    for v in volumes:
        if not isinstance(v, str) or len(v) > 63 or not _DNS_LABEL.match(v):
            out.append(f"spec.volumes: name {v!r} must be a DNS label")
    for key, value in (spec.get("nodeSelector") or {}).items():
        if problem := _label_key_problem(key):
            out.append(f"spec.nodeSelector: {problem}")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            out.append(f"spec.nodeSelector[{key}]: {value!r} is not a label value")
    for i, t in enumerate(spec.get("tolerations") or []):
        if t.get("operator") == "Exists" and t.get("value"):
            out.append(f"spec.tolerations[{i}]: value must be empty with operator Exists")
        if t.get("key") is None and t.get("operator") != "Exists":
            out.append(f"spec.tolerations[{i}]: an empty key needs operator Exists")
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    names = [c.get("name") for c in containers]
    for name in {n for n in names if names.count(n) > 1}:
        out.append(f"spec.containers: {name!r} is used more than once")
    for c in containers:
        where = f"spec.containers[{c.get('name')}]"
        paths = [m.get("mountPath") for m in c.get("volumeMounts") or []]
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                out.append(f"{where}.volumeMounts: {m.get('name')!r} is not a volume of the pod")
        for p in {p for p in paths if paths.count(p) > 1}:
            out.append(f"{where}.volumeMounts: mountPath {p!r} is used more than once")
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        for section, values in (("limits", limits), ("requests", requests)):
            for key, value in values.items():
                if not quantity_ok(value):
                    out.append(f"{where}.resources.{section}[{key}]: {value!r} is not a quantity")
        for key in set(limits) | set(requests):
            if key in _NATIVE_RESOURCES:
                continue
            # Extended resources cannot be overcommitted (k8s fills a missing request in).
            if key in requests and key not in limits:
                out.append(f"{where}.resources: {key} has a request but no limit")
            elif key in requests and str(requests[key]) != str(limits[key]):
                out.append(f"{where}.resources: {key} request {requests[key]!r} must equal its "
                           f"limit {limits[key]!r}")
        if any(k.startswith("nvidia.com/mig-") for k in limits) and "nvidia.com/gpu" in limits:
            out.append(f"{where}.resources: whole GPUs and MIG slices in one container")
        if (c.get("securityContext") or {}).get("privileged"):
            out.append(f"{where}.securityContext: privileged (refused by this test cluster)")
    return out


def schema_problems(obj: dict, version: str = VERSION) -> list[str]:
    """The official schema's verdict (strict: unknown fields are errors)."""
    import kubernetes_validate as kv
    from kubernetes_validate.utils import ValidationError

    try:
        kv.validate(obj, version, strict=True)
    except ValidationError as e:
        return [str(e).split("\n")[0]]
    return []


# --- the server --------------------------------------------------------------------------------
def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Failure", "message": message, "reason": reason,
                              "code": code}, status=code)


def _get_path(obj, dotted: str):
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _matches(obj: dict, label_selector: str | None, field_selector: str | None) -> bool:
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, (label_selector or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    for term in filter(None, (field_selector or "").split(",")):
        negate = "!=" in term
        k, v = term.split("!=" if negate else "=", 1)
        if (str(_get_path(obj, k.lstrip("="))) == v) == negate:
            return False
    return True


class KubeApi:
    """The API server. Attributes tests may set: pod_behaviour, ready_delay, delete_delay."""

    def __init__(self, namespaces=("default", "jhub"), version: str = VERSION,
                 ready_delay: float = 0.2, delete_delay: float = 0.2):
        self.version = version
        self.namespaces = set(namespaces)
        self.ready_delay = ready_delay
        self.delete_delay = delete_delay
        self.pod_behaviour = "run"  # run | unschedulable | image-pull-error
        self.on_running = None  # callable(pod dict), run in a worker thread
        self.token = secrets.token_urlsafe(16)
        self.requests: list[dict] = []
        self._store: dict[tuple[str, str, str], dict] = {}
        self._log: list[tuple[int, str, str, dict]] = []
        self._rv = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- life cycle (called from the test's thread) --
    def start(self) -> KubeApi:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._serve())
            except BaseException as e:  # reported to start()
                failure.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="kubeapi", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def write_kubeconfig(self, path: str | Path, namespace: str = "jhub") -> Path:
        path = Path(path)
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "kubeapi",
            "clusters": [{"name": "kubeapi", "cluster": {"server": self.url}}],
            "contexts": [{"name": "kubeapi", "context": {"cluster": "kubeapi", "user": "test",
                                                         "namespace": namespace}}],
            "users": [{"name": "test", "user": {"token": self.token}}],
        }))
        path.chmod(0o600)  # it holds the token
        return path

    # -- reading what happened (any thread) --
    def objects(self, plural: str, namespace: str) -> dict[str, dict]:
        with self._lock:
            return {k[2]: copy.deepcopy(o) for k, o in self._store.items()
                    if k[0] == plural and k[1] == namespace}

    def requests_for(self, method: str, plural: str | None = None) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["method"] == method
                    and (plural is None or r["plural"] == plural)]

    def terminate_pod(self, namespace: str, name: str, exit_code: int = 1) -> None:
        """The pod's containers end with `exit_code` (as if the server crashed or was killed)."""
        asyncio.run_coroutine_threadsafe(
            self._terminate(namespace, name, exit_code), self._loop).result(10)

    # -- inside the server's loop --
    async def _serve(self) -> None:
        self._changed = asyncio.Condition()
        self._closing = False
        self._tasks: set[asyncio.Task] = set()
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/version", self._version)
        r.add_get("/api", self._api_versions)
        r.add_get("/api/v1/namespaces", self._list_namespaces)
        r.add_get("/api/v1/namespaces/{ns}", self._read_namespace)
        r.add_post("/api/v1/namespaces", self._create_namespace)
        r.add_get("/api/v1/namespaces/{ns}/{plural}", self._list_or_watch)
        r.add_post("/api/v1/namespaces/{ns}/{plural}", self._create)
        r.add_get("/api/v1/namespaces/{ns}/{plural}/{name}", self._read)
        r.add_delete("/api/v1/namespaces/{ns}/{plural}/{name}", self._delete)
        r.add_patch("/api/v1/namespaces/{ns}/{plural}/{name}", self._patch)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _shutdown(self) -> None:
        self._closing = True
        async with self._changed:
            self._changed.notify_all()
        for task in list(self._tasks):
            task.cancel()
        await self._runner.cleanup()

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        body = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return _status(400, "BadRequest", "the body is not JSON")
        parts = request.path.strip("/").split("/")
        with self._lock:
            self.requests.append({
                "method": request.method, "path": request.path, "query": dict(request.query),
                "plural": parts[4] if len(parts) > 4 else (parts[2] if len(parts) > 2 else None),
                "body": body,
            })
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        request[BODY] = body
        return await handler(request)

    def _bump(self, obj: dict) -> int:
        rv = next(self._rv)
        obj["metadata"]["resourceVersion"] = str(rv)
        return rv

    async def _emit(self, plural: str, kind: str, obj: dict) -> None:
        async with self._changed:
            self._log.append((int(obj["metadata"]["resourceVersion"]), plural, kind,
                              copy.deepcopy(obj)))
            self._changed.notify_all()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _api_versions(self, request):
        return web.json_response(
            {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})

    async def _version(self, request):
        major, minor, _ = self.version.split(".")
        return web.json_response({"major": major, "minor": minor,
                                  "gitVersion": f"v{self.version}-kubeapi", "platform": "linux/amd64"})

    async def _list_namespaces(self, request):
        items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n},
                  "status": {"phase": "Active"}} for n in sorted(self.namespaces)]
        return web.json_response({"kind": "NamespaceList", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": str(next(self._rv))},
                                  "items": items})

    async def _read_namespace(self, request):
        ns = request.match_info["ns"]
        if ns not in self.namespaces:
            return _status(404, "NotFound", f'namespaces "{ns}" not found')
        return web.json_response({"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": ns}, "status": {"phase": "Active"}})

    async def _create_namespace(self, request):
        body = request[BODY] or {}
        name = (body.get("metadata") or {}).get("name")
        if name in self.namespaces:
            return _status(409, "AlreadyExists", f'namespaces "{name}" already exists')
        self.namespaces.add(name)
        return web.json_response(body, status=201)

    def _known(self, ns: str, plural: str) -> web.Response | None:
        if plural not in KINDS:
            return _status(404, "NotFound", f"the server could not find the requested resource ({plural})")
        if ns not in self.namespaces:
            return _status(404, "NotFound", f'namespaces "{ns}" not found')
        return None

    async def _list_or_watch(self, request):
        ns, plural = request.match_info["ns"], request.match_info["plural"]
        if (refused := self._known(ns, plural)) is not None:
            return refused
        q = request.query
        ls, fs = q.get("labelSelector"), q.get("fieldSelector")
        if q.get("watch", "").lower() in ("true", "1"):
            return await self._watch(request, ns, plural, ls, fs,
                                     int(q.get("resourceVersion") or 0),
                                     float(q.get("timeoutSeconds") or 300))
        with self._lock:
            items = [copy.deepcopy(o) for (p, n, _), o in self._store.items()
                     if p == plural and n == ns and _matches(o, ls, fs)]
        rv = self._log[-1][0] if self._log else 0
        return web.json_response({"kind": KINDS[plural] + "List", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": str(rv)}, "items": items})

    async def _watch(self, request, ns, plural, ls, fs, since, timeout):
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sent = since
        try:
            while loop.time() < deadline and not self._closing:
                async with self._changed:
                    pending = [e for e in self._log if e[0] > sent]
                    if not pending:
                        try:
                            await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
                        except TimeoutError:
                            break
                        continue
                for rv, p, kind, obj in pending:
                    sent = max(sent, rv)
                    if p == plural and obj["metadata"].get("namespace") == ns and _matches(obj, ls, fs):
                        line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
                        await response.write(line)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def _create(self, request):
        ns, plural = request.match_info["ns"], request.match_info["plural"]
        if (refused := self._known(ns, plural)) is not None:
            return refused
        obj = copy.deepcopy(request[BODY])
        if not isinstance(obj, dict):
            return _status(400, "BadRequest", "the body must be an object")
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", KINDS[plural])
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace", ns) != ns:
            return _status(400, "BadRequest", "the namespace of the provided object does not "
                                              "match the namespace sent on the request")
        if "name" not in meta and "generateName" in meta:
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        problems = schema_problems(obj, self.version) + object_problems(obj)
        if problems:
            return _status(422, "Invalid",
                           f'{KINDS[plural]} "{meta.get("name")}" is invalid: {"; ".join(problems)}')
        key = (plural, ns, meta["name"])
        with self._lock:
            if key in self._store:
                return _status(409, "AlreadyExists", f'{plural} "{meta["name"]}" already exists')
            meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now())
            if plural == "pods":
                obj["status"] = {"phase": "Pending", "qosClass": "Guaranteed"}
            elif plural == "persistentvolumeclaims":
                obj["status"] = {"phase": "Bound", "capacity": obj["spec"]["resources"]["requests"]}
            self._bump(obj)
            self._store[key] = obj
        await self._emit(plural, "ADDED", obj)
        if plural == "pods":
            self._spawn(self._kubelet(ns, meta["name"]))
        return web.json_response(obj, status=201)

    async def _read(self, request):
        ns, plural, name = (request.match_info[k] for k in ("ns", "plural", "name"))
        if (refused := self._known(ns, plural)) is not None:
            return refused
        with self._lock:
            obj = copy.deepcopy(self._store.get((plural, ns, name)))
        if obj is None:
            return _status(404, "NotFound", f'{plural} "{name}" not found')
        return web.json_response(obj)

    async def _patch(self, request):
        ns, plural, name = (request.match_info[k] for k in ("ns", "plural", "name"))
        with self._lock:
            obj = self._store.get((plural, ns, name))
            if obj is None:
                return _status(404, "NotFound", f'{plural} "{name}" not found')

            def merge(a, b):
                for k, v in b.items():
                    if v is None:
                        a.pop(k, None)
                    elif isinstance(v, dict) and isinstance(a.get(k), dict):
                        merge(a[k], v)
                    else:
                        a[k] = v

            merge(obj, request[BODY] or {})
            self._bump(obj)
        await self._emit(plural, "MODIFIED", obj)
        return web.json_response(obj)

    async def _delete(self, request):
        ns, plural, name = (request.match_info[k] for k in ("ns", "plural", "name"))
        if (refused := self._known(ns, plural)) is not None:
            return refused
        with self._lock:
            obj = self._store.get((plural, ns, name))
            if obj is None:
                return _status(404, "NotFound", f'{plural} "{name}" not found')
            if plural == "pods" and self.delete_delay > 0:
                if obj["metadata"].get("deletionTimestamp"):
                    return web.json_response(copy.deepcopy(obj))
                obj["metadata"]["deletionTimestamp"] = _now()
                self._bump(obj)
                terminating = True
            else:
                del self._store[(plural, ns, name)]
                self._bump(obj)
                terminating = False
        await self._emit(plural, "MODIFIED" if terminating else "DELETED", obj)
        if terminating:
            self._spawn(self._remove_later(plural, ns, name))
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success",
                                  "metadata": {}, "details": {"name": name, "kind": plural}})

    async def _remove_later(self, plural, ns, name):
        await asyncio.sleep(self.delete_delay)
        with self._lock:
            obj = self._store.pop((plural, ns, name), None)
            if obj is not None:
                self._bump(obj)
        if obj is not None:
            await self._emit(plural, "DELETED", obj)

    async def _event(self, ns: str, pod: dict, reason: str, message: str, kind="Normal"):
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{pod['metadata']['name']}.{uuid.uuid4().hex[:12]}",
                         "namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": _now()},
            "involvedObject": {"kind": "Pod", "name": pod["metadata"]["name"], "namespace": ns,
                               "uid": pod["metadata"]["uid"], "apiVersion": "v1"},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": _now(), "lastTimestamp": _now(),
            "source": {"component": "kubeapi-kubelet"},
        }
        with self._lock:
            self._bump(event)
            self._store[("events", ns, event["metadata"]["name"])] = event
        await self._emit("events", "ADDED", event)

    async def _update_pod(self, ns: str, name: str, change) -> dict | None:
        with self._lock:
            pod = self._store.get(("pods", ns, name))
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                return None
            change(pod)
            self._bump(pod)
        await self._emit("pods", "MODIFIED", pod)
        return pod

    async def _kubelet(self, ns: str, name: str) -> None:
        """Take a new pod to Running (or leave it Pending, as pod_behaviour says)."""
        await asyncio.sleep(self.ready_delay / 2)
        with self._lock:
            pod = copy.deepcopy(self._store.get(("pods", ns, name)))
        if pod is None:
            return
        if self.pod_behaviour == "unschedulable":
            await self._event(ns, pod, "FailedScheduling",
                              "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.", "Warning")
            return
        await self._event(ns, pod, "Scheduled", f"Successfully assigned {ns}/{name} to kubeapi-node")
        image = pod["spec"]["containers"][0]["image"]
        await self._event(ns, pod, "Pulling", f'Pulling image "{image}"')
        if self.pod_behaviour == "image-pull-error":
            await self._event(ns, pod, "Failed", f'Failed to pull image "{image}": not found',
                              "Warning")
            return
        await asyncio.sleep(self.ready_delay / 2)
        await self._event(ns, pod, "Pulled", f'Successfully pulled image "{image}"')
        for c in pod["spec"]["containers"]:
            await self._event(ns, pod, "Created", f"Created container {c['name']}")
            await self._event(ns, pod, "Started", f"Started container {c['name']}")

        def running(p):
            p["spec"]["nodeName"] = "kubeapi-node"
            p["status"] = {
                "phase": "Running", "podIP": "127.0.0.1", "hostIP": "127.0.0.1",
                "startTime": _now(), "qosClass": p["status"].get("qosClass", "Guaranteed"),
                "conditions": [{"type": t, "status": "True"} for t in
                               ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
                "containerStatuses": [
                    {"name": c["name"], "image": c["image"], "imageID": "", "ready": True,
                     "restartCount": 0, "started": True, "state": {"running": {"startedAt": _now()}}}
                    for c in p["spec"]["containers"]],
            }

        pod = await self._update_pod(ns, name, running)
        if pod is not None and self.on_running is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, self.on_running, copy.deepcopy(pod))

    async def _terminate(self, ns: str, name: str, exit_code: int) -> None:
        def ended(p):
            p["status"]["phase"] = "Failed" if exit_code else "Succeeded"
            for s in p["status"].get("containerStatuses", []):
                s.update(ready=False, started=False, state={"terminated": {
                    "exitCode": exit_code, "reason": "Error" if exit_code else "Completed",
                    "startedAt": _now(), "finishedAt": _now()}})

        await self._update_pod(ns, name, ended)


# --- pytest fixtures ---------------------------------------------------------------------------
# Import them into the test module that uses them: from tests.testbed.kubeapi import kube_api


def _clear_kubespawner_clients() -> None:
    from kubespawner import clients

    clients.load_config.cache_clear()
    clients._client_cache.clear()


async def _stop_reflectors() -> None:
    from kubespawner import KubeSpawner

    for reflector in list(KubeSpawner.reflectors.values()):
        await reflector.stop()
    KubeSpawner.reflectors.clear()


def real_cluster_kubeconfig() -> str | None:
    """$KUBECONFIG when it names a file whose cluster answers /version, else None."""
    path = os.environ.get("KUBECONFIG")
    if not path or not Path(path).is_file():
        return None
    import subprocess
    import sys

    probe = ("import asyncio\nfrom kubernetes_asyncio import client, config\n"
             "async def main():\n    await config.load_kube_config()\n"
             "    async with client.ApiClient() as api:\n"
             "        await client.VersionApi(api).get_code(_request_timeout=5)\n"
             "asyncio.run(main())\n")
    ok = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30)
    return path if ok.returncode == 0 else None


@pytest.fixture
async def kube_api(tmp_path, monkeypatch):
    """A running KubeApi; kubernetes_asyncio (and so KubeSpawner) pointed at it."""
    from kubernetes_asyncio.config import kube_config

    api = KubeApi()
    await asyncio.get_running_loop().run_in_executor(None, api.start)
    path = api.write_kubeconfig(tmp_path / "kubeconfig")
    # kubernetes_asyncio reads $KUBECONFIG once, at import: point its default at our file.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.setenv("KUBECONFIG", str(path))
    _clear_kubespawner_clients()
    try:
        yield api
    finally:
        await _stop_reflectors()
        _clear_kubespawner_clients()
        await asyncio.get_running_loop().run_in_executor(None, api.stop)


@pytest.fixture(params=["loopback", "cluster"])
async def kube_cluster(request, tmp_path, monkeypatch):
    """The loopback KubeApi, then a real cluster when $KUBECONFIG reaches one (else skipped).

    Yields (KubeApi or None, namespace). Tests that read objects do it through the API, so the
    same test body runs against both.
    """
    if request.param == "cluster":
        path = real_cluster_kubeconfig()
        if path is None:
            pytest.skip("no Kubernetes cluster: $KUBECONFIG is unset or does not answer")
        from kubernetes_asyncio.config import kube_config

        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", path)
        _clear_kubespawner_clients()
        try:
            yield None, os.environ.get("JHUB_CLOUD_TEST_K8S_NAMESPACE", "jhub")
        finally:
            await _stop_reflectors()
            _clear_kubespawner_clients()
        return
    api = KubeApi()
    await asyncio.get_running_loop().run_in_executor(None, api.start)
    path = api.write_kubeconfig(tmp_path / "kubeconfig")
    from kubernetes_asyncio.config import kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.setenv("KUBECONFIG", str(path))
    _clear_kubespawner_clients()
    try:
        yield api, "jhub"
    finally:
        await _stop_reflectors()
        _clear_kubespawner_clients()
        await asyncio.get_running_loop().run_in_executor(None, api.stop)

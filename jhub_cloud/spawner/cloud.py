"""CloudSpawner: the spawner the hub sees. The profile a user chooses (and their groups allow)
decides the backend; the maintained spawner of that backend (the "child") runs the server.

What happens at a spawn, in JupyterHub's order (jupyterhub/user.py `User.spawn`):
1. options_from_form / options_from_query: the page's answer is read and checked (early answer);
2. run_pre_spawn_hook: under the user's lock, the options are checked again by policy.decide
   against the user's running servers and reserved (the REST API's user_options arrive only
   here); then the child is built with the settings from builders/<backend>.py and the hub-read
   traits (start_timeout, ...) are copied from it. A refusal raises SpawnException (HTTP 400)
   before anything is started;
3. start/poll/stop/progress/get_url go to the child; state keeps {profile, backend, resources,
   the child's own state} so that a restarted hub finds the server again and counts it.
See /work/shared/SPAWNER-NOTES.md §1 for why each of these is done this way.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from inspect import isawaitable
from pathlib import Path

from jupyterhub.spawner import Spawner, SpawnException
from jupyterhub.utils import maybe_future
from markupsafe import escape
from traitlets import Bool, Dict, Float, List, Unicode, observe

from .. import metrics
from ..config.model import Config, build_config
from ..policy import allowed_profiles, decide, user_limits
from ..policy.types import Resources
from . import form
from .answering import server_api_url, wait_answering
from .limits import resources_from_json, resources_to_json, running_resources, user_lock
from .mountspec import MountSpecError, mount_spec, roots_env
from .registry import Backend, BackendUnavailable, load_backend
from .target import SpawnTarget

# Constructor arguments a child needs to be the same server as the wrapper (User._new_spawner).
CHILD_KWARGS = ("user", "orm_spawner", "hub", "authenticator", "config", "proxy_spec",
                "oauth_client_id", "cookie_options", "cookie_host_prefix_enabled",
                "trusted_alt_names", "public_url", "public_hub_url", "internal_ssl",
                "internal_trust_bundles", "internal_certs_location")
# Traits the hub sets on the wrapper after construction and the child must see.
SHARED_TRAITS = ("api_token", "admin_access", "cert_paths")
# Traits the hub reads from the wrapper, though they belong to the backend.
HUB_READ_TRAITS = ("start_timeout", "http_timeout", "poll_interval", "poll_jitter",
                   "consecutive_failure_limit")
SPEC_ENV = "STS_WIRE_SPEC"


class CloudSpawner(Spawner):
    suite = Dict(
        config=True,
        help="The suite's whole validated configuration (set by jhub_cloud.spawner.hub_setup from "
        "the YAML file); its profiles, groups, backends and storage decide every spawn.",
    )
    sts_wire = Unicode(
        config=True,
        help="The sts-wire command that starts each server. Default: the sts-wire beside the hub's "
        "Python for backends in `absolute_command_backends`, else `sts-wire` from the server's PATH.",
    )
    answer_poll_seconds = Float(
        10.0, config=True,
        help="""For this many seconds after a server started, ask it every 0.1 s whether it answers
        before handing it to the hub (whose own check backs off to 5 s between tries, so a server
        up just after a try waited seconds more). 0 leaves it all to the hub's check.""",
    )
    show_form = Bool(
        True, config=True,
        help="Show the spawn page. False: a spawn without options (the hub's Start button, GET "
        "/hub/spawn) takes the first profile offered with its defaults; options given through "
        "the REST API or `?opt-` query arguments are still checked the same way.",
    )
    absolute_command_backends = List(
        ["local", "slurm"], config=True,
        help="Backends whose servers run the hub's own environment (same machine or a shared "
        "file system): their commands are absolute paths from the hub's venv.",
    )

    # Plain attributes (not traits): what this server was admitted with, and its child.
    reserved: Resources | None = None
    profile_name: str | None = None
    backend_name: str | None = None
    _child: Spawner | None = None
    _child_state: dict | None = None
    _events: list | None = None
    _child_starting = False
    _start_done = False
    _will_resume = False
    _admitted_at = 0.0
    # Why the last server ended on its own ({"reason", "at"}): kept in the state across the
    # stop (and a hub restart) so that the admin API and the next spawn page can tell the user.
    last_stop: dict | None = None

    # --- configuration and the user ---------------------------------------------------------
    @property
    def cfg(self) -> Config:
        cfg = self.__dict__.get("_cfg")
        if cfg is None:
            cfg = self.__dict__["_cfg"] = build_config(json.loads(json.dumps(self.suite)))
        return cfg

    def _groups(self) -> list[str]:
        return sorted(g.name for g in self.user.groups)

    def _running(self) -> list[Resources]:
        return running_resources(list(self.user.spawners.values()), self)

    def _refuse(self, message: str, options: dict | None = None) -> SpawnException:
        metrics.spawn_refused(self.cfg, options)
        e = SpawnException(f"Not started: {message}", reason="policy")
        e.jupyterhub_message = e.message  # what the spawn page shows, without "400 SpawnException"
        return e

    # --- the spawn page --------------------------------------------------------------------
    async def get_options_form(self):
        if not self.show_form:
            return ""
        groups = self._groups()
        offers = allowed_profiles(self.cfg, groups)
        page = form.render(offers, user_limits(self.cfg, groups), len(self._running()),
                           self.user_options, username=self.user.name)
        return stop_notice(self.last_stop) + page

    def options_from_form(self, formdata):
        try:
            options = form.parse_form(formdata, allowed_profiles(self.cfg, self._groups()))
        except form.Refusal as e:
            raise self._refuse(str(e)) from None
        return self._check(options)

    def options_from_query(self, query_data):
        try:
            options = form.options_from_query(query_data)
        except form.Refusal as e:
            raise self._refuse(str(e)) from None
        return self._check(options)

    def _check(self, options: dict) -> dict:
        """An early answer for the page (no reservation: the real check is at the spawn)."""
        decision = decide(self.cfg, self._groups(), options, self._running())
        if not decision.allowed:
            raise self._refuse(decision.reason, options)
        return options

    # --- admission: check and reserve under the user's lock, then build the child -----------
    async def run_pre_spawn_hook(self):
        await self._admit()
        # The site's hooks reach the child, which is the one that has the backend's traits (the
        # hub ran them on this wrapper already, before the child existed).
        child = self._child
        await child.run_auth_state_hook(await self.user.get_auth_state())
        await child.apply_group_overrides()
        result = await maybe_future(child.run_pre_spawn_hook())
        self._copy_hub_read(child)
        return result

    def _copy_hub_read(self, child: Spawner) -> None:
        # Read by the hub from this wrapper (start_timeout before start() even runs).
        for name in HUB_READ_TRAITS:
            if child.has_trait(name):
                setattr(self, name, getattr(child, name))

    async def _admit(self) -> None:
        self._events = []
        self._admitted_at = time.monotonic()
        self._note(5, "Checking your choices against your groups' limits")
        try:
            options = form.screen_options(self.user_options or {})
        except form.Refusal as e:
            raise self._refuse(str(e), self.user_options) from None
        async with user_lock(self.user.name):
            decision = decide(self.cfg, self._groups(), options, self._running())
            if not decision.allowed:
                raise self._refuse(decision.reason, options)
            try:
                backend = load_backend(decision.resources.backend)
            except BackendUnavailable as e:
                raise self._refuse(str(e), options) from None
            # Reserved before the lock is released: a concurrent spawn of this user counts it.
            self.reserved, self.profile_name = decision.resources, decision.profile
            self.backend_name = backend.name
        try:
            self._child = self._make_child(backend, decision.resources)
        except (MountSpecError, ValueError) as e:  # the builders' and mount spec's refusals
            self.reserved = self.profile_name = self.backend_name = None
            raise self._refuse(str(e), options) from None
        except Exception:
            self.reserved = self.profile_name = self.backend_name = None
            raise
        self._copy_hub_read(self._child)

    def _target(self) -> SpawnTarget:
        return SpawnTarget(self.user.name, self.name or "", tuple(self._groups()))

    def _command(self, resources: Resources, target: SpawnTarget) -> tuple[list[str], dict]:
        """What the server runs, and the environment that tells sts-wire what to mount."""
        absolute = resources.backend in self.absolute_command_backends
        here = Path(sys.executable).parent
        inner = list(self.cmd) if absolute else ["jupyterhub-singleuser"]
        storage = self.cfg.data.get("storage")
        spec = mount_spec(resources, target, storage)
        if spec is None:
            return inner, {}
        sts = self.sts_wire or (str(here / "sts-wire") if absolute else "sts-wire")
        env = {SPEC_ENV: json.dumps(spec), **roots_env(storage)}
        return [sts, "run", "--spec", f"env:{SPEC_ENV}", "--", *inner], env

    def _make_child(self, backend: Backend, resources: Resources) -> Spawner:
        target = self._target()
        cmd, env = self._command(resources, target)
        settings = backend.child_settings(resources, target, self.cfg.backends.get(backend.name) or {},
                                          cmd, env)
        kwargs = {n: getattr(self, n) for n in CHILD_KWARGS if self.has_trait(n)}
        child = backend.child_class(_deprecated_db_session=self.db, user_options={}, **kwargs)
        child.load_state(self._child_state or {})
        for name, value in settings.items():
            if name == "environment":  # the site's own c.Spawner.environment stays, ours on top
                value = {**child.environment, **value}
            setattr(child, name, value)
        self._copy_shared(child)
        return child

    def _copy_shared(self, child: Spawner) -> None:
        for name in SHARED_TRAITS:
            setattr(child, name, getattr(self, name))

    async def _ensure_child(self) -> Spawner | None:
        """The child, rebuilt from state after a hub restart (from the stored resources)."""
        if self._child is None and self.reserved is not None and self.backend_name:
            try:
                backend = load_backend(self.backend_name)
            except BackendUnavailable as e:
                self.log.error("Cannot reach %s's server: %s", self._log_name, e)
                return None
            self._child = self._make_child(backend, self.reserved)
        return self._child

    # --- passed to the child ---------------------------------------------------------------
    async def start(self):
        if self._child is None:  # hooks skipped by some caller: admit here, the same way
            await self._admit()
        child, r = self._child, self.reserved
        metrics.watch_spawn(self, self._admitted_at)  # started or failed, when the hub knows
        self._copy_shared(child)
        self._start_done = False
        what = f"{r.cpu:g} CPUs, {r.memory_bytes / 2**30:g} GiB memory" + (f", {r.gpus} GPUs" if r.gpus else "")
        note = getattr(child, "limits_note", None)
        self._note(20, f"Starting profile {self.profile_name} on the {self.backend_name} backend ("
                   f"{note() if note else what})")
        if SPEC_ENV in child.environment:
            paths = ", ".join(m.expand(self.user.name).path for m in r.mounts)
            self._note(30, f"Your storage will be mounted by sts-wire before the notebook starts: {paths}")
        self._child_starting = True
        self.last_stop = None  # a new server: the notice about the last one has been seen
        try:
            result = child.start()
            if isawaitable(result):
                result = await result
        finally:
            self._start_done = True
        self._note(90, "Server process started; waiting for it to answer")
        if isinstance(result, tuple) and self.server is not None and not self.internal_ssl:
            await wait_answering(server_api_url(result[0], result[1], self.server.base_url),
                                 self.answer_poll_seconds)
        return result

    async def poll(self):
        child = await self._ensure_child()
        if child is None:
            return 0
        status = await child.poll()
        ran = self.server is not None and not self._spawn_pending and not self._stop_pending
        if status is not None and self.last_stop is None and ran:
            # The first poll that finds a running server gone (the hub polls again while it
            # cleans up, and by then the child may have forgotten why); a failed start has its
            # own message already.
            self.last_stop = {"reason": stop_reason(self.backend_name, status),
                              "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
            self.log.warning("%s stopped on its own: %s", self._log_name, self.last_stop["reason"])
        return status

    async def stop(self, now=False):
        metrics.forget_server(self.user.name, self.name or "")
        child = await self._ensure_child()
        if child is not None:
            await child.stop(now=now)

    async def get_url(self):
        child = await self._ensure_child()
        return await maybe_future(child.get_url()) if child is not None else await super().get_url()

    async def delete_forever(self):
        child = await self._ensure_child()
        if child is not None and hasattr(child, "delete_forever"):
            await maybe_future(child.delete_forever())

    async def move_certs(self, paths):
        # Internal SSL: the child knows where its server can read them (home, volume, ...).
        if self._child is not None:
            return await maybe_future(self._child.move_certs(paths))
        return await super().move_certs(paths)

    @observe("port")
    def _port_to_child(self, change):
        # batchspawner's API handler sets the port on the spawner it finds: this one.
        if self._child is not None and self._child.has_trait("port"):
            self._child.port = change["new"]

    @property
    def will_resume(self):
        return self._child.will_resume if self._child is not None else self._will_resume

    @will_resume.setter
    def will_resume(self, value):
        self._will_resume = bool(value)

    # --- progress ---------------------------------------------------------------------------
    def _note(self, progress: int, message: str) -> None:
        if self._events is None:
            self._events = []
        self._events.append({"progress": progress, "message": message})

    async def progress(self):
        sent = 0
        yield {"progress": 2, "message": "Preparing your server"}
        while not self._child_starting and not self._start_done:
            for ev in (self._events or [])[sent:]:
                sent += 1
                yield ev
            if not self._spawn_pending:
                return
            await asyncio.sleep(0.1)
        if self._child is not None:
            try:
                async for ev in self._child.progress():
                    for mine in (self._events or [])[sent:]:
                        sent += 1
                        yield mine
                    yield ev
            except Exception:  # progress is only for show: never let it fail the page
                self.log.exception("Progress of %s's child failed", self._log_name)
        while True:
            for ev in (self._events or [])[sent:]:
                sent += 1
                yield ev
            if self._start_done or not self._spawn_pending:
                return
            await asyncio.sleep(0.1)

    # --- state ------------------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        if self.reserved is not None:
            state["cloud"] = {"profile": self.profile_name, "backend": self.backend_name,
                              "resources": resources_to_json(self.reserved)}
        child_state = self._child.get_state() if self._child is not None else self._child_state
        if child_state:
            state["child"] = child_state
        if self.last_stop:
            state["last_stop"] = self.last_stop
        return state

    def load_state(self, state):
        super().load_state(state)
        cloud = state.get("cloud")
        if cloud:
            self.reserved = resources_from_json(cloud["resources"])
            self.profile_name, self.backend_name = cloud.get("profile"), cloud.get("backend")
        self._child_state = dict(state.get("child") or {})
        self.last_stop = state.get("last_stop") or None

    def clear_state(self):
        super().clear_state()
        if self._child is not None:
            # What the child keeps across a stop (e.g. KubeSpawner's pvc_name) survives.
            self._child.clear_state()
            self._child_state = self._child.get_state()
        self._child = None
        self.reserved = self.profile_name = self.backend_name = None
        self._events, self._child_starting, self._start_done = [], False, False


def stop_reason(backend: str | None, status) -> str:
    """What a poll's answer says about a server that ended: the child's own words (a text), or
    its exit code."""
    if isinstance(status, str) and status:
        return status
    what = f"the {backend or 'server'} server"
    if isinstance(status, int) and status < 0:  # subprocess's convention: killed by that signal
        try:
            return f"{what} was killed by {signal.Signals(-status).name}"
        except ValueError:
            pass
    return f"{what} ended" + (f" with exit code {status}" if status else "")


def stop_notice(last_stop: dict | None) -> str:
    """The spawn page's first line after a server ended on its own (HTML, escaped)."""
    if not last_stop:
        return ""
    return ('<div class="alert alert-warning" role="alert" id="jhub-cloud-last-stop">'
            f"Your last server stopped on its own at {escape(last_stop.get('at', '?'))}: "
            f"{escape(last_stop.get('reason', ''))}</div>\n")

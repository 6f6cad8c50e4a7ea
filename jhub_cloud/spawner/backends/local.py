"""Local backend adapter: LocalProcessSpawner plus cgroup (v1 or v2) limits for CPU and memory, and
a private mount namespace per server for its storage mounts (mountns.py).

Everything else (running as the user, poll by PID after a hub restart, SIGINT/TERM/KILL on
stop) is LocalProcessSpawner's own. Where no cgroup controllers are available, the server runs without
CPU and memory limits, with a warning in the hub's log and on the spawn page, unless
`require_limits` is set, in which case it is not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Bool, Integer, List, Unicode

from .. import cgroups, mountns


class LocalChild(LocalProcessSpawner):
    cgroup_root = Unicode(
        "/sys/fs/cgroup", config=True,
        help="Where the cgroup v1 controllers (cpu, memory) are mounted, or the cgroup v2 folder "
        "(unified hierarchy, or a subtree delegated to the hub) whose children the servers get.",
    )
    cgroup_parent = Unicode(
        "jhub-cloud", config=True,
        help="Folder under each controller holding one cgroup per server (created when missing).",
    )
    require_limits = Bool(
        False, config=True,
        help="Refuse to start a server when its CPU and memory limits cannot be enforced "
        "(no cgroup v1 or v2 cpu and memory controllers writable by the hub). When False the server "
        "starts without limits and a warning is logged.",
    )
    cgroup_prefix = Unicode(
        "", help="Start of this server's cgroup name (set by the builder: the safe user/server name)."
    )
    cgroup_name = Unicode("", help="This server's cgroup, relative to each controller (kept in state).")
    cgroup_version = Integer(1, help="cgroup v1 or v2 for this server's cgroup (kept in state).")
    mount_roots = List(
        Unicode(), help="Folders where sts-wire mounts this server's buckets (set by the builder "
        "from storage.mount_roots); each gets a private tmpfs in the server's mount namespace.",
    )
    private_mounts = Bool(
        True, config=True,
        help="Run each server in its own mount namespace with a private, user-owned tmpfs on each "
        "mount root, so that users' mounts of the same path (/s3/scratch) do not collide and no "
        "mount outlives its server. False: mounts go to the machine's folders, shared by all.",
    )

    def _group(self, name: str | None = None, version: int | None = None) -> cgroups.CGroup:
        return cgroups.CGroup(Path(self.cgroup_root), name or self.cgroup_name, version or self.cgroup_version)

    def limits_note(self) -> str:
        """What the limits are and whether they are enforced, for the progress messages."""
        why_not = cgroups.available(Path(self.cgroup_root))
        what = f"{self.cpu_limit:g} CPUs, {self.mem_limit // 2**20} MiB memory"
        return f"{what}, enforced by cgroups" if why_not is None else f"{what}, NOT enforced: {why_not}"

    def make_preexec_fn(self, name):
        steps = []  # as root, before giving root up
        if self.cgroup_name:
            steps.append(cgroups.join_preexec(self._group()))
        if self.private_mounts and self.mount_roots:
            import pwd

            pw = pwd.getpwnam(name)
            steps.append(mountns.enter_preexec(self.mount_roots, pw.pw_uid, pw.pw_gid))
        steps.append(super().make_preexec_fn(name))

        def preexec():
            for step in steps:
                step()

        return preexec

    async def start(self):
        version, why_not = cgroups.detect(Path(self.cgroup_root))
        if version is not None:
            name = f"{self.cgroup_parent}/{self.cgroup_prefix or self.user.name}-{secrets.token_hex(3)}"
            group = self._group(name, version)
            try:
                cgroups.create(group, self.cpu_limit or os.cpu_count(), self.mem_limit or 2**62)
                self.cgroup_name, self.cgroup_version = name, version
            except OSError as e:
                why_not = f"cannot make the cgroup {name} (v{version}): {e}"
                with contextlib.suppress(OSError):
                    cgroups.remove(group)
        if why_not and self.require_limits:
            raise RuntimeError(f"cannot enforce this server's CPU and memory limits: {why_not}")
        if why_not:
            self.log.warning("Starting %s without CPU/memory limits: %s", self._log_name, why_not)
        if self.private_mounts and self.mount_roots:
            why_not = mountns.available()
            if why_not:
                raise RuntimeError(f"cannot give this server private mount folders: {why_not}")
            for root in self.mount_roots:
                os.makedirs(root, mode=0o755, exist_ok=True)  # the tmpfs needs a folder to cover
        try:
            return await super().start()
        except BaseException:
            await self._remove_cgroup(self.cgroup_name)
            raise

    async def poll(self):
        name = self.cgroup_name
        status = await super().poll()
        if status is not None:
            await self._remove_cgroup(name)  # the server ended by itself: take its leftovers
        return status

    async def stop(self, now=False):
        name = self.cgroup_name
        await super().stop(now)
        await self._remove_cgroup(name)

    async def _remove_cgroup(self, name: str) -> None:
        if not name:
            return
        group = self._group(name)
        if not any(d.exists() for d in group.dirs):
            return
        killed = await asyncio.to_thread(cgroups.remove, group)
        if killed:
            self.log.warning("Killed %d leftover process(es) of %s", len(killed), self._log_name)
        if self.cgroup_name == name:
            self.cgroup_name = ""
        self.cgroup_version = 1

    def get_state(self):
        state = super().get_state()
        if self.cgroup_name:
            state["cgroup"] = self.cgroup_name
            state["cgroup_v"] = self.cgroup_version
        return state

    def load_state(self, state):
        super().load_state(state)
        name = state.get("cgroup", "")
        # Only a cgroup of ours is ever killed and removed, whatever the stored state says.
        ok = isinstance(name, str) and name.startswith(self.cgroup_parent + "/") and ".." not in name
        self.cgroup_name = name if ok else ""
        self.cgroup_version = 2 if state.get("cgroup_v") == 2 else 1

    def clear_state(self):
        super().clear_state()
        self.cgroup_name = ""
        self.cgroup_version = 1

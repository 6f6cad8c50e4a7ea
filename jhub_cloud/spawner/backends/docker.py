"""DockerChild: dockerspawner.DockerSpawner with the few changes CloudSpawner needs.

- host networking: every container gets its own free port and the hub connects to host_ip:port
  (DockerSpawner's own get_ip_and_port asks Docker for a port binding, which host mode has none of);
- poll says why a container ended (exit code, OOM kill, Docker's error) and removes it, so a
  crashed or killed server leaves nothing behind even though the hub will not call stop();
  Docker not answering is "still running", not "stopped";
- the image is the one the builder chose: an `image` in user_options cannot replace it;
- progress tells which step the start is at (pulling, creating, starting, waiting for the server).
"""

from __future__ import annotations

import asyncio
import signal

import docker.errors
import requests
from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port
from traitlets import Bool, Unicode, observe


class DockerChild(DockerSpawner):
    host_networking = Bool(
        False,
        help="Containers share the host's network: pick a free port per container and let the "
             "server listen on `ip` (set by the builder to the backend's host_ip).",
    ).tag(config=True)

    _phase = Unicode("")

    @observe("name_template")
    def _name_template_changed(self, change):
        # Settings may arrive after construction (and after load_state computed the default
        # name); a container already known by its state keeps its name.
        if not self.object_id:
            self.object_name = self._object_name_default()

    @observe("image")
    def _image_changed(self, change):
        # Replaces DockerSpawner's, which renames even a container known by its state (after a
        # hub restart CloudSpawner sets the image after load_state: the server was then lost).
        self._name_template_changed(change)

    async def check_allowed(self, image):
        if image != self.image:
            raise ValueError(f"image {image!r} was not chosen through the profile")
        return image

    async def pull_image(self, image):
        self._phase = f"Pulling image {image}" if self.pull_policy == "always" else f"Checking image {image}"
        try:
            await super().pull_image(image)
        except docker.errors.ImageNotFound:
            if self.pull_policy != "never":
                raise
            raise RuntimeError(f"image {image} is not on the Docker host and backends.docker.pull_policy "
                               "is never: the site must pull or build it there first") from None
        self._phase = "Creating the container"

    async def start_object(self):
        self._phase = "Starting the container"
        await super().start_object()
        self._phase = "Container started; waiting for the server to answer"

    async def start(self):
        if self.host_networking:
            self.port = random_port()
        return await super().start()

    async def get_ip_and_port(self):
        if self.host_networking:
            return self.ip, self.port
        return await super().get_ip_and_port()

    async def poll(self):
        try:
            container = await self.get_object()
        except (docker.errors.DockerException, requests.RequestException, OSError) as e:
            # Docker not answering is not a stopped server: the hub would forget (and leak) it.
            self.log.warning("Cannot ask Docker about %s (%s); taking it as still running",
                             self.object_name, e)
            return None
        if not container:
            return 0
        state = container["State"]
        if state["Running"]:
            return None
        code = state["ExitCode"]
        reason = f"ExitCode={code}"
        if state.get("OOMKilled"):
            reason += ", out of memory (OOMKilled: the profile's memory limit was reached)"
        elif code > 128:  # the shell's convention: 128 + the signal that ended it
            reason += f", killed by {_signal_name(code - 128)}"
        if state.get("Error"):
            reason += f", Error={state['Error']!r}"
        reason += f", FinishedAt={state.get('FinishedAt')}"
        self.log.warning("Container %s ended: %s", self.object_name, reason)
        if self.remove:
            await self.remove_object()
            self.object_id = ""
        return reason

    async def stop(self, now=False):
        # poll may have removed an ended container already: then there is nothing to stop.
        if not self.object_id and not await self.get_object():
            self.clear_state()
            return
        await super().stop(now=now)

    async def progress(self):
        shown = None
        while True:
            if self._phase and self._phase != shown:
                shown = self._phase
                yield {"message": shown}
            if shown and shown.startswith("Container started"):
                return
            await asyncio.sleep(0.5)

    def get_state(self):
        state = super().get_state()
        if self.host_networking and self.object_id:
            state["port"] = self.port
        return state

    def load_state(self, state):
        super().load_state(state)
        # Not only with host_networking: CloudSpawner loads the state before the settings.
        if state.get("port"):
            self.port = int(state["port"])


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"

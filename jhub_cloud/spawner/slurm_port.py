"""The hub API endpoint where a Slurm job reports its server's port: POST /hub/api/batchspawner.

batchspawner's own handler sets every posted key that the spawner has as an attribute, with the
job's token, i.e. from code the user controls (e.g. `exec_prefix`, which the hub later runs in a
shell). This one accepts exactly `{"port": <int 1-65535>}`, only from the token of the server
that is starting, and hands it to that server's SlurmChild. `register()` puts it in the hub's
API handlers in place of batchspawner's; call it from the hub's config (the Slurm adapter calls
it too when imported).
"""

from __future__ import annotations

import hmac
import json

from jupyterhub import apihandlers
from jupyterhub.apihandlers import APIHandler
from tornado import web

ROUTE = r"/api/batchspawner"  # where batchspawner-singleuser posts (under /hub)


def port_receiver(spawner):
    """The object that takes the port: the spawner itself or the child a wrapper drives."""
    if hasattr(spawner, "accept_port"):
        return spawner
    for name in ("child", "_child", "child_spawner"):
        child = getattr(spawner, name, None)
        if child is not None and hasattr(child, "accept_port"):
            return child
    return None


def parse_port(body: bytes) -> int:
    """`{"port": N}` with N an integer 1-65535, nothing else; ValueError says what is wrong."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise ValueError("the body must be JSON: {\"port\": <number>}") from None
    if not isinstance(data, dict) or set(data) != {"port"}:
        raise ValueError("the body must be exactly {\"port\": <number>}")
    port = data["port"]
    if type(port) is not int or not 1 <= port <= 65535:
        raise ValueError("port must be a whole number from 1 to 65535")
    return port


class SlurmPortHandler(APIHandler):
    @web.authenticated
    def post(self):
        token = self.get_auth_token() or ""
        user = self.current_user
        spawners = getattr(user, "spawners", None) or {}
        spawner = next((s for s in spawners.values()
                        if s.api_token and hmac.compare_digest(s.api_token, token)), None)
        if spawner is None:
            raise web.HTTPError(403, "only a starting server's own token may report its port")
        receiver = port_receiver(spawner)
        if receiver is None:
            raise web.HTTPError(400, "this server does not run as a Slurm job")
        try:
            port = parse_port(self.request.body)
            receiver.accept_port(port)
        except ValueError as e:
            raise web.HTTPError(400, str(e)) from None
        self.set_status(201)
        self.finish(json.dumps({"message": "port received"}))


def register(handlers: list | None = None) -> None:
    """Replace batchspawner's handler (if imported) by ours in the hub's API handler list."""
    handlers = apihandlers.default_handlers if handlers is None else handlers
    handlers[:] = [h for h in handlers
                   if not (h[0] == ROUTE and h[1] is not SlurmPortHandler)]
    if not any(h[1] is SlurmPortHandler for h in handlers):
        handlers.append((ROUTE, SlurmPortHandler))

"""The hub's spawn page handler, refusing form fields and `?opt-` queries that are not UTF-8.

JupyterHub's SpawnHandler decodes each submitted value as UTF-8 and answers a bare HTTP 500
when one is not (raw bytes, overlong sequences, encoded surrogates). This subclass answers
400 with the form again and a message naming the field, like every other refusal. It rides on
the authenticator's handlers, which the hub routes before its own.
"""

from __future__ import annotations

from jupyterhub.handlers.pages import SpawnHandler
from jupyterhub.scopes import needs_scope


def not_utf8(arguments: dict[str, list[bytes]]) -> str | None:
    """The first field whose value is not UTF-8 text, or None."""
    for key, values in arguments.items():
        for value in values:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return key
    return None


class SpawnPageHandler(SpawnHandler):
    @needs_scope("servers")
    async def _get(self, user_name, server_name, display_name):
        field = not_utf8(self.request.query_arguments)
        if field is None or not await self._refuse(user_name, field):
            return await SpawnHandler._get.__wrapped__(self, user_name, server_name, display_name)

    @needs_scope("servers")
    async def _post(self, user_name, server_name, display_name):
        field = not_utf8(self.request.body_arguments)
        if field is None or not await self._refuse(user_name, field):
            return await SpawnHandler._post.__wrapped__(self, user_name, server_name, display_name)

    async def _refuse(self, user_name: str, field: str) -> bool:
        """Answer 400 with the form and the reason; False when there is no such user (the hub's
        own handler then answers its 404)."""
        user = self.current_user if user_name == self.current_user.name else self.find_user(user_name)
        if user is None:
            return False
        shown = field[:40].encode("latin-1", "replace").decode("utf-8", "replace")  # tornado's latin-1 keys
        message = f"Not started: the field {shown!r} is not UTF-8 text; reload the page and submit it as shown"
        self.log.warning("Refusing a spawn request for %s: field %r is not UTF-8", user.name, shown)
        self.set_status(400)
        self.finish(await self._render_form(for_user=user, message=message,
                                            spawner_options_form=await user.spawner.get_options_form()))
        return True


HANDLERS = [(r"/spawn", SpawnPageHandler), (r"/spawn/([^/]+)", SpawnPageHandler),
            (r"/spawn/([^/]+)/([^/]+)", SpawnPageHandler)]

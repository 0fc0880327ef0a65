"""The hub's page that wakes a signed-in user's sleeping server, for hubshift's session gateway.

A checkpointed server wakes for a request that carries a hub token of its
user: the gateway asks the hub whose a token is. A browser that has no such
token for the server (a new browser, an expired cookie) cannot show one: the
hub's own login cookie is scoped to /hub/, and the gateway never sees it. The
gateway sends such a browser here, to /hub/hubshift/wake?next=/user/NAME/...:
the hub signs the user in if needed, this page wakes the server if it is the
user's own, and sends the browser back to where it was going.
"""

from hubshift_spawner import HubshiftError, HubshiftSpawner
from jupyterhub.handlers import BaseHandler
from jupyterhub.utils import url_path_join
from tornado import web


class HubshiftWakeHandler(BaseHandler):
    @web.authenticated
    async def get(self):
        next_url = self.get_argument("next", "")
        # A path on this site only, never elsewhere (no open redirect).
        if not next_url.startswith("/") or next_url.startswith("//") or "\\" in next_url:
            raise web.HTTPError(400, "next must be a path on this hub, like /user/NAME/")
        path = next_url.split("?", 1)[0]
        user = self.current_user
        # The user's own servers; the longest prefix wins (a named server's /user/ann/lab/ over /user/ann/).
        prefixes = [(spawner.server.base_url, spawner) for spawner in user.spawners.values() if spawner.server is not None]
        matching = sorted((p for p in prefixes if path.startswith(p[0])), key=lambda p: len(p[0]), reverse=True)
        if not matching:
            if path.startswith(user.url):
                # The user's own URL, but no server of theirs there (never started, or being stopped): the hub's
                # own page for that path says so and offers to start it.
                self.redirect(url_path_join(self.hub.base_url, next_url[len(self.base_url):]))
                return
            raise web.HTTPError(403, f"{path} is not one of {user.name}'s running servers: open your own from the hub's home page")
        prefix, spawner = matching[0]
        if not isinstance(spawner, HubshiftSpawner):
            self.redirect(next_url)
            return
        try:
            await spawner.wake()
        except HubshiftError as e:
            raise web.HTTPError(502, str(e)) from e
        self.log.info("hubshift: %s woke their server at %s", user.name, prefix)
        self.redirect(next_url)

"""HubshiftSpawner: JupyterHub servers that hubshift runs, checkpoints, wakes and moves.

The hub asks hubshift's scheduler for a session (with the environment the hub
gives every single-user server and the user's resource limits). The address
the hub gets back is hubshift's session gateway, never a node's: the gateway
follows the session wherever it goes, so the hub's proxy routes never change.
"""

import asyncio
import hashlib
import json
import os
import re

from jupyterhub.spawner import Spawner
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Bool, Float, Unicode, default


class HubshiftError(Exception):
    """hubshift refused or could not do what the hub asked; the message says what to do."""


# hubshift's user names (src/core/session.ts, UserName): they name the user's home directory and store prefix.
_HUBSHIFT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_KEPT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._")
_MAX = 64


def hubshift_user_name(name):
    """The hubshift user name of a hub user: the name itself where hubshift takes it as it is.

    Other names (an e-mail address, capitals, letters beyond ASCII, more
    than 64 characters) are escaped: "u--", then each character that is not
    a-z 0-9 . _ written as "-" and the two hex digits of each of its UTF-8
    bytes ("ann@lab.org" is "u--ann-40lab.org"). A name too long for that
    is "h--", the escaped name's start, "-" and 24 hex digits of its
    sha256. Names that contain "--" are escaped too, so that no hub user's
    own name is another's escaped one: two hub users never share a hubshift
    user (and so a home directory).
    """
    if _HUBSHIFT_NAME.fullmatch(name) and "--" not in name:
        return name
    escaped = "".join(c if c in _KEPT else "".join(f"-{b:02x}" for b in c.encode("utf-8")) for c in name)
    if len("u--") + len(escaped) <= _MAX:
        return "u--" + escaped
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:24]
    head = escaped[: _MAX - len("h--") - 1 - len(digest)]
    # Readable only (the digest tells names apart): no escape cut in two.
    cut = head.rfind("-", len(head) - 2)
    if cut >= 0:
        head = head[:cut]
    return f"h--{head}-{digest}"


class HubshiftSpawner(Spawner):
    hubshift_url = Unicode(config=True, help="hubshift scheduler's API (default: $HUBSHIFT_URL)")
    token_file = Unicode(config=True, help="file holding the scheduler's bearer token (default: $HUBSHIFT_TOKEN_FILE)")
    gateway_url = Unicode(
        config=True,
        help="the session gateway as the hub's proxy reaches it (default: $HUBSHIFT_GATEWAY_URL, else the scheduler's own gateway)",
    )
    checkpoint_on_stop = Bool(
        config=True,
        help="checkpoint a server to the store before removing it when the hub stops it (default: $HUBSHIFT_CHECKPOINT_ON_STOP)",
    )
    request_timeout = Float(120, config=True, help="seconds one call to the scheduler may take (a start waits for the server)")
    operation_timeout = Float(600, config=True, help="seconds a checkpoint on stop may take")

    @default("hubshift_url")
    def _default_url(self):
        return os.environ.get("HUBSHIFT_URL", "http://127.0.0.1:7300")

    @default("token_file")
    def _default_token_file(self):
        return os.environ.get("HUBSHIFT_TOKEN_FILE", "")

    @default("gateway_url")
    def _default_gateway_url(self):
        return os.environ.get("HUBSHIFT_GATEWAY_URL", "")

    @default("checkpoint_on_stop")
    def _default_checkpoint_on_stop(self):
        return os.environ.get("HUBSHIFT_CHECKPOINT_ON_STOP", "").lower() in ("1", "true", "yes")

    # A session's start includes placing it; waking one may follow a request.
    @default("start_timeout")
    def _default_start_timeout(self):
        return 180

    @default("http_timeout")
    def _default_http_timeout(self):
        return 120

    session_id = None

    def load_state(self, state):
        super().load_state(state)
        self.session_id = state.get("hubshift_session")

    def get_state(self):
        state = super().get_state()
        if self.session_id:
            state["hubshift_session"] = self.session_id
        return state

    def clear_state(self):
        super().clear_state()
        self.session_id = None

    def _token(self):
        if not self.token_file:
            raise HubshiftError("HubshiftSpawner needs the scheduler's token: set HUBSHIFT_TOKEN_FILE or c.HubshiftSpawner.token_file")
        try:
            with open(self.token_file) as f:
                return f.read().strip()
        except OSError as e:
            raise HubshiftError(f"cannot read hubshift's token file {self.token_file}: {e.strerror}") from e

    async def _api(self, method, path, body=None, allow=()):
        """One call to the scheduler; returns (status, parsed JSON or None). Statuses in `allow` are answers, not errors."""
        url = self.hubshift_url.rstrip("/") + "/" + path
        req = HTTPRequest(
            url,
            method=method,
            headers={"Authorization": f"Bearer {self._token()}", "Content-Type": "application/json"},
            body=json.dumps(body) if body is not None else None,
            request_timeout=self.request_timeout,
        )
        try:
            resp = await AsyncHTTPClient().fetch(req)
        except HTTPClientError as e:
            if e.code in allow:
                return e.code, None
            detail = ""
            if e.response is not None and e.response.body:
                try:
                    detail = json.loads(e.response.body)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    detail = e.response.body[:200].decode("utf-8", "replace")
            raise HubshiftError(f"hubshift scheduler at {self.hubshift_url} refused {method} /{path}: {detail or e}") from e
        except OSError as e:
            raise HubshiftError(f"hubshift scheduler at {self.hubshift_url} did not answer {method} /{path}: {e} (is it running?)") from e
        return resp.code, (json.loads(resp.body) if resp.body else None)

    async def _gateway(self):
        if self.gateway_url:
            return self.gateway_url.rstrip("/")
        _, g = await self._api("GET", "v1/gateway")
        return g["url"].rstrip("/")

    async def start(self):
        resources = {}
        if self.mem_limit:
            resources["memoryBytes"] = int(self.mem_limit)
        if self.cpu_limit:
            resources["cpus"] = float(self.cpu_limit)
        gateway = await self._gateway()
        body = {"user": hubshift_user_name(self.user.name), "env": self.get_env(), "resources": resources}
        # The cost ledger's savings by group: the user's first hub group, if any.
        groups = sorted(g.name for g in getattr(self.user, "groups", []) or [])
        if groups:
            body["group"] = groups[0]
        _, s = await self._api("POST", "v1/sessions", body)
        self.session_id = s["id"]
        self.log.info("hubshift session %s for %s (hubshift user %s) on node %s, reached through %s", s["id"], self.user.name, s["user"], s["node"], gateway)
        return gateway

    async def poll(self):
        if not self.session_id:
            return 0
        try:
            code, s = await self._api("GET", f"v1/sessions/{self.session_id}", allow=(404,))
        except HubshiftError as e:
            # The scheduler being away says nothing about the session: still running.
            self.log.warning("cannot ask hubshift about %s: %s", self.session_id, e)
            return None
        if code == 404:
            return 0
        if s["operation"] is None and s["state"] == "failed":
            return 1
        if s["operation"] is None and s["state"] == "stopped":
            return 0
        # running, checkpointed (woken by the gateway on the next request), or moving.
        return None

    async def wake(self):
        """Restores the session if it sleeps (checkpointed); one running, or waking already, is fine."""
        if not self.session_id:
            raise HubshiftError(f"{self.user.name}'s server has no hubshift session; start it from the hub")
        code, _ = await self._api("POST", f"v1/sessions/{self.session_id}/restore", {}, allow=(409,))
        return code != 409

    async def _wait(self, operation):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.operation_timeout
        while loop.time() < deadline:
            _, st = await self._api("GET", f"v1/operations/{operation}")
            if st["status"] in ("completed", "failed"):
                return st["status"]
            await asyncio.sleep(0.5)
        return "timed out"

    async def stop(self, now=False):
        if not self.session_id:
            return
        sid = self.session_id
        if self.checkpoint_on_stop and not now:
            code, s = await self._api("GET", f"v1/sessions/{sid}", allow=(404,))
            if code != 404 and s["state"] == "running" and s["operation"] is None:
                _, r = await self._api("POST", f"v1/sessions/{sid}/checkpoint", {"leaveRunning": False})
                status = await self._wait(r["operation"]["id"])
                self.log.info("hubshift checkpoint of %s before stop: %s", sid, status)
        for attempt in range(60):
            code, _ = await self._api("DELETE", f"v1/sessions/{sid}", allow=(404, 409))
            if code != 409:
                return
            # Busy with an operation (a move, a wake): removed once that is done.
            await asyncio.sleep(1)
        raise HubshiftError(f"hubshift session {sid} stayed busy for a minute; remove it with hubshift session rm")

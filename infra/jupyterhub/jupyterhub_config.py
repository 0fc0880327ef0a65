"""hubshift's part of a JupyterHub configuration.

Load it from your own configuration, which keeps the authenticator, ports and
everything else:

    load_subconfig('/opt/hubshift/infra/jupyterhub/jupyterhub_config.py')

It reads hubshift's settings from the environment:
  HUBSHIFT_URL            the scheduler's API (http://127.0.0.1:7300 by default)
  HUBSHIFT_TOKEN_FILE     the scheduler's bearer token (required)
  HUBSHIFT_GATEWAY_URL    the session gateway as the proxy reaches it (default: asked of the scheduler)
  HUBSHIFT_HUB_TOKEN_FILE the hub token hubshift's gateway reports users' activity with
                          (default: HUBSHIFT_TOKEN_FILE); it is registered here as the
                          'hubshift' service with the users:activity scope
  HUBSHIFT_CHECKPOINT_ON_STOP  true: checkpoint a server before the hub stops it

Single-user servers must reach the hub's API from the nodes: set the hub's
hub_connect_ip (or hub_connect_url) in your own configuration.
"""

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
if here not in sys.path:
    sys.path.insert(0, here)

c = get_config()  # noqa: F821 (given by JupyterHub when it loads this file)

token_file = os.environ.get("HUBSHIFT_TOKEN_FILE")
if not token_file:
    raise SystemExit("hubshift's jupyterhub_config.py: set HUBSHIFT_TOKEN_FILE to the scheduler's token file")

c.JupyterHub.spawner_class = "hubshift_spawner.HubshiftSpawner"
c.HubshiftSpawner.hubshift_url = os.environ.get("HUBSHIFT_URL", "http://127.0.0.1:7300")
c.HubshiftSpawner.token_file = token_file

hub_token_file = os.environ.get("HUBSHIFT_HUB_TOKEN_FILE", token_file)
try:
    with open(hub_token_file) as f:
        hub_token = f.read().strip()
except OSError as e:
    raise SystemExit(f"hubshift's jupyterhub_config.py: cannot read {hub_token_file}: {e.strerror}")

# The page the session gateway sends a browser to when it cannot tell whose the browser is (hubshift_wake.py).
from hubshift_wake import HubshiftWakeHandler  # noqa: E402 (after the path above)

c.JupyterHub.extra_handlers.append((r"/hubshift/wake", HubshiftWakeHandler))

# Appended, not assigned: the operator's own services and roles stay.
c.JupyterHub.services.append({"name": "hubshift", "api_token": hub_token})
c.JupyterHub.load_roles.append({"name": "hubshift", "scopes": ["users:activity", "read:users:activity"], "services": ["hubshift"]})

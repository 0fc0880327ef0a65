"""An example operator configuration: the operator's own settings, then hubshift's part.

Run it with hubshift's scheduler (and its gateway) already up:

    HUBSHIFT_URL=http://127.0.0.1:7300 HUBSHIFT_TOKEN_FILE=/etc/hubshift/token \
        jupyterhub -f infra/jupyterhub/example_jupyterhub_config.py
"""

import os

c = get_config()  # noqa: F821

# The operator's: how users log in, where the hub listens.
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = 8000
# Sessions run in their own network namespaces on the nodes: they reach the
# hub's API at an address of the node's bridge, not at loopback.
c.JupyterHub.hub_ip = os.environ.get("HUB_IP", "10.213.0.1")
c.JupyterHub.hub_connect_ip = os.environ.get("HUB_IP", "10.213.0.1")
# configurable-http-proxy from hubshift's node modules.
c.ConfigurableHTTPProxy.command = [os.path.join(os.path.dirname(__file__), "../../node_modules/.bin/configurable-http-proxy")]

# hubshift's part.
load_subconfig(os.path.join(os.path.dirname(__file__), "jupyterhub_config.py"))  # noqa: F821

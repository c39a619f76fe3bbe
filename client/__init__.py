"""seisd client: the wire protocol (client.protocol), the Python API (client.Client) and the seisctl CLI."""
from client.api import Client, DaemonUnavailable, SeisdError  # noqa: F401
from client.stream import Stream  # noqa: F401

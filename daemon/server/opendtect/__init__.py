"""seisd as OpendTect's machine-learning apply server (docs/opendtect.md): the framing of OpendTect's sockets
(framing.py), the one model an endpoint serves, kept warm in an executor through a stream session (applier.py),
and the listening socket with its thread (endpoint.py). Torch-free: it runs in the daemon's main process."""

"""The main side: the seisd process itself (sockets and loop, request handlers, store, scheduler, supervisor,
catalogue, security, viewers' manager, backend launchers). It never imports torch nor daemon.executor; work that
needs them runs in an executor or a child process. The import contracts in pyproject.toml keep this."""

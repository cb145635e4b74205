"""What an operator sees: the HTTP endpoints (``http``), Prometheus metrics (``metrics``), systemd
notify and watchdog (``notify``) and the log set-up (``logs``).
"""

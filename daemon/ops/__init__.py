"""What an operator sees: the HTTP endpoints (``http``), Prometheus metrics (``metrics``), systemd
notify and watchdog (``notify``), the log set-up (``logs``) and the version (``version``).
"""

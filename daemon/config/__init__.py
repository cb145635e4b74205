"""Configuration: the settings models and their loading (``settings``; the TOML file and the
environment come in through ``sources``, each problem is worded by ``problems``), API keys
(``keys``), the checks that refuse a config that would hurt itself (``check``, ``folders``) and
what a reload changes (``reload_plan``).

Imports ``providers`` only; nothing here touches the state file or starts a task.
"""

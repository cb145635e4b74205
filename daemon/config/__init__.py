"""Configuration: the settings models (``settings``), API keys (``keys``), the checks that refuse a
config that would hurt itself (``check``, ``folders``) and what a reload changes (``reload_plan``).

Imports ``providers`` only; nothing here touches the state file or starts a task.
"""

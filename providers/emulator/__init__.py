"""A faithful local Moonshot (Kimi) + Z.ai (GLM) files API, with faults and ground truth.

``Emulator`` lives in ``providers.emulator.server``, ``StoredFile`` in ``.state``, the fault
plans in ``.faults``. This ``__init__`` imports nothing (no import cycle through it).
"""

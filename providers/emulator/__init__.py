"""A faithful local Moonshot (Kimi) + Z.ai (GLM) files API, with faults and ground truth."""

from __future__ import annotations

from providers.emulator.faults import Fault, FaultPlan, parse_faults
from providers.emulator.server import DEFAULT_KEYS, Emulator
from providers.emulator.state import StoredFile

__all__ = ["DEFAULT_KEYS", "Emulator", "Fault", "FaultPlan", "StoredFile", "parse_faults"]

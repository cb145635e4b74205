"""Kimi and GLM: limits tables, transports, error translation, retries, breakers, router.

This package imports nothing from ``daemon`` or ``handlers``. Its contract lives in
``providers.errors`` (the error tree), ``providers.types`` (the shared values and Protocols)
and ``providers.limits`` (the limits tables); the rest in its modules
(``providers.dispatch`` with ``providers.gate`` and ``providers.events``,
``providers.factory``, ``providers.emulator``, …). This ``__init__`` imports nothing.
"""

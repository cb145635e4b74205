"""The installed inboxd version (the CLI's ``version``, the metrics' ``inboxd_build_info``)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["package_version"]


def package_version() -> str:
    """The installed inboxd version ('0+unknown' when running from an uninstalled tree)."""
    try:
        return version("inboxd")
    except PackageNotFoundError:
        return "0+unknown"

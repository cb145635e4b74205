"""Build a provider's ``ProviderClient`` from its settings: the composition root calls this."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from providers.client import FallbackCallback, ProviderClient
from providers.errors import ConfigError
from providers.limits import PROVIDERS
from providers.transports._http import HttpTransport
from providers.transports._openai import OpenAITransport
from providers.transports._zhipuai import ZhipuAITransport
from providers.types import Transport

__all__ = ["TRANSPORTS", "build_client"]

# Which transports can talk to which provider (zhipuai speaks GLM only).
TRANSPORTS: dict[str, tuple[str, ...]] = {
    "kimi": ("openai", "http"),
    "glm": ("zhipuai", "openai", "http"),
}


def build_client(
    provider: str,
    *,
    base_url: str,
    api_key: str,
    transports: Sequence[str],
    timeout: float,
    connect_timeout: float,
    on_fallback: FallbackCallback | None = None,
    http_transport: httpx.AsyncBaseTransport | None = None,
    list_purposes: Sequence[str] = (),
) -> ProviderClient:
    """The provider's client with its transport chain in the given order.

    ``http_transport`` is given to the raw ``http`` transport's AsyncClient only (the SDKs
    bring their own HTTP stacks). ``list_purposes`` are the purposes in use: GLM requires a
    purpose on every list call, so a listing of all files asks once for each (none given:
    every documented GLM purpose). Raises ConfigError naming the key for an unknown provider
    or a transport that cannot talk to it.
    """
    if provider not in PROVIDERS:
        raise ConfigError(f"providers.{provider}: unknown provider; known: {', '.join(PROVIDERS)}")
    allowed = TRANSPORTS[provider]
    problems = [
        f"providers.{provider}.transports: {name!r} cannot talk to {provider}; "
        f"use some of {', '.join(allowed)}"
        for name in transports
        if name not in allowed
    ]
    if not transports:
        problems.append(
            f"providers.{provider}.transports: name at least one of {', '.join(allowed)}"
        )
    if problems:
        raise ConfigError(problems)
    chain: list[Transport] = []
    for name in transports:
        if name == "http":
            chain.append(
                HttpTransport(
                    provider,
                    base_url=base_url,
                    api_key=api_key,
                    timeout=timeout,
                    connect_timeout=connect_timeout,
                    transport=http_transport,
                    list_purposes=list_purposes,
                )
            )
        else:
            sdk = OpenAITransport if name == "openai" else ZhipuAITransport
            chain.append(
                sdk(
                    provider,
                    base_url=base_url,
                    api_key=api_key,
                    timeout=timeout,
                    connect_timeout=connect_timeout,
                    list_purposes=list_purposes,
                )
            )
    return ProviderClient(provider, chain, on_fallback=on_fallback)

"""Live checks against the real provider APIs: ``.venv/bin/pytest -m live tests/test_live.py``.

Each transport of each provider uploads a tiny file, finds it in the listing and deletes it.
Skipped unless the provider's key is in the environment: ``MOONSHOT_API_KEY`` (optional
``MOONSHOT_BASE_URL``, default the global ``https://api.moonshot.ai/v1``; China keys need
``https://api.moonshot.cn/v1``) and ``ZHIPUAI_API_KEY`` (optional ``ZHIPUAI_BASE_URL``,
default ``https://open.bigmodel.cn/api/paas/v4``; Z.ai keys need
``https://api.z.ai/api/paas/v4``). Costs nothing but one stored file for a few seconds.
"""

from __future__ import annotations

import io
import os
import time

import pytest

from providers.factory import build_client

LIVE = {
    # provider: (key variable, base URL variable, default base URL, purpose, file name)
    "kimi": (
        "MOONSHOT_API_KEY",
        "MOONSHOT_BASE_URL",
        "https://api.moonshot.ai/v1",
        "file-extract",
        "inboxd-live-check.txt",
    ),
    "glm": (
        "ZHIPUAI_API_KEY",
        "ZHIPUAI_BASE_URL",
        "https://open.bigmodel.cn/api/paas/v4",
        "agent",
        "inboxd-live-check.txt",
    ),
}
CASES = [
    pytest.param("kimi", "openai", id="kimi-openai"),
    pytest.param("kimi", "http", id="kimi-http"),
    pytest.param("glm", "zhipuai", id="glm-zhipuai"),
    pytest.param("glm", "openai", id="glm-openai"),
    pytest.param("glm", "http", id="glm-http"),
]


@pytest.mark.live
@pytest.mark.anyio
@pytest.mark.parametrize(("provider", "transport"), CASES)
async def test_live_upload_list_delete(provider: str, transport: str) -> None:
    """The real API accepts a tiny upload, lists it with the right size, and deletes it."""
    key_var, url_var, default_url, purpose, filename = LIVE[provider]
    api_key = os.environ.get(key_var)
    if not api_key:
        pytest.skip(f"{key_var} is not set: live {provider} checks need a real key")
    payload = f"inboxd live check {time.time()}\n".encode()
    client = build_client(
        provider,
        base_url=os.environ.get(url_var) or default_url,
        api_key=api_key,
        transports=[transport],
        timeout=60.0,
        connect_timeout=10.0,
    )
    try:
        result = await client.upload(
            filename=filename,
            fileobj=io.BytesIO(payload),
            size=len(payload),
            purpose=purpose,
            content_type="text/plain",
        )
        try:
            assert result.transport == transport
            assert result.remote.bytes == len(payload)
            listed = {f.id: f for f in await client.list_files(purpose)}
            assert result.remote.id in listed
            assert listed[result.remote.id].bytes == len(payload)
        finally:
            await client.delete(result.remote.id)
        assert result.remote.id not in {f.id for f in await client.list_files(purpose)}
    finally:
        await client.aclose()

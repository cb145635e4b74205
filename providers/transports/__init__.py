"""Ways of talking to a provider's files API, each a ``providers.types.Transport``.

This ``__init__`` imports nothing (no import cycle through it): import each transport from
its module, ``providers.transports._openai`` / ``._zhipuai`` / ``._http``.

- ``openai``  — ``OpenAITransport``: ``AsyncOpenAI`` (Kimi's chain head; GLM's second link).
- ``zhipuai`` — ``ZhipuAITransport``: synchronous ``ZhipuAI`` in a worker thread (GLM only).
- ``http``    — ``HttpTransport``: raw ``httpx.AsyncClient``, the last link of both chains.

Every SDK client is built with ``max_retries=0`` and an explicit timeout (``timeout``, with
``connect_timeout`` for connecting): retrying is owned by one loop elsewhere. Files are passed
as ``(filename, fileobj, content_type)`` with an open binary file, never a Path, so nothing is
read whole into memory.

When a request counts as "never sent"
-------------------------------------
Each transport installs a *send probe*: an HTTP ``request`` event hook on the HTTP client
under the SDK (``httpx2.AsyncClient`` under openai 3.x, ``httpx.Client`` under zhipuai), called
when the SDK hands the finished request to its HTTP layer; the raw transport builds the request
itself and sends it separately. A failure is **never sent** → ``TransportUnavailable`` (the
client moves down the chain) exactly when:

- openai:  ``import openai`` fails (ImportError or anything else), or building ``AsyncOpenAI``
  / its ``DefaultAsyncHttpxClient`` raises (an SDK whose signature we do not fit: TypeError,
  AttributeError, …); or ``files.*`` raises any non-``APIStatusError`` exception before the
  probe fired (e.g. RuntimeError/TypeError from the SDK's file extraction, ValueError from
  request building, ``openai.OpenAIError`` raised while preparing options).
- zhipuai: ``import zhipuai``/``import httpx`` fails, or building ``ZhipuAI`` raises (e.g.
  ``ZhipuAIError`` for a missing key, TypeError for an incompatible signature); or
  ``files.*`` raises any non-``APIStatusError`` exception before the probe fired (its
  ``_build_request`` runs outside its try block, so such errors arrive raw).
- http:    ``AsyncClient.build_request`` raises (encoding the multipart body, a bad header).
- every transport: the failure chain holds ``UnsupportedProtocol`` or ``InvalidURL`` (the
  URL cannot be used by this client; no connection was attempted) — check ``base_url``.

Everything else came from, or may have reached, the server and is the same whichever
transport sent it, so it never moves down the chain:

- A 4xx/5xx answer (openai ``APIStatusError``, zhipuai ``APIStatusError`` subclasses, httpx
  status ≥ 400) → ``providers.classify.classify`` on the response's JSON body and headers.
- ``ConnectError``, ``ConnectTimeout``, ``PoolTimeout`` anywhere in the ``__cause__`` /
  ``__context__`` chain (openai ``APIConnectionError``/``APITimeoutError`` and zhipuai's
  wrap them with ``raise ... from``; class names are matched in httpx, httpx2 and httpcore)
  → ``Retryable(ambiguous=False)``: a network fact, the same for every transport, nothing
  was sent.
- Any other failure after the probe fired — ``ReadTimeout``, ``WriteTimeout`` (we cannot know
  which bytes the kernel delivered), ``ReadError``, ``WriteError``, ``RemoteProtocolError``,
  ``LocalProtocolError``, ``anyio.EndOfStream``, ``ssl.SSLError``, an unreadable 2xx body
  (``APIResponseValidationError``), an OSError reading the file mid-body — →
  ``Retryable(ambiguous=True)``: the provider may have stored the file, so the caller must
  reconcile against the listing before sending it again.
"""

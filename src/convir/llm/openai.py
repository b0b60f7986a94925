"""``openai:BASE_URL#MODEL``: any server speaking the OpenAI HTTP API.

vLLM, Ollama, the llama.cpp server and OpenAI itself all accept ``POST {BASE_URL}/chat/completions``
and ``POST {BASE_URL}/completions`` with the same JSON, so one small httpx client covers them
(no SDK dependency). BASE_URL normally ends in ``/v1``.

Network trouble is expected in long evaluation runs, so connection errors, timeouts, 429 and
5xx are retried with exponential backoff; other 4xx mean the request itself is wrong and
retrying would only repeat the error. Every failure becomes :class:`LLMError` with the URL
in the message.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from convir.errors import ConvirError
from convir.llm import complete_stops
from convir.llm.base import GenParams, LLMError, Message
from convir.specs import url_and_model

API_KEY_ENV = ("CONVIR_LLM_API_KEY", "OPENAI_API_KEY")
_MAX_RETRY_AFTER = 30.0  # never sleep longer than this on a server's Retry-After
_EXAMPLE = "openai:http://localhost:8000/v1#Qwen/Qwen2.5-0.5B-Instruct or openai:https://api.openai.com/v1#gpt-4o-mini"


class OpenAILLM:
    """Client for one model on one OpenAI-compatible server; thread-safe (httpx.Client is)."""

    instruct = True

    def __init__(
        self,
        target: str,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        api_key: str | None = None,
    ) -> None:
        self.base_url, self.model = url_and_model(target, "openai", _EXAMPLE, LLMError)
        self.spec = f"openai:{self.base_url}#{self.model}"
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self._api_key = api_key
        self._client = httpx.Client(timeout=self.timeout)
        self.last_seconds = 0.0

    def _headers(self) -> dict[str, str]:
        """Bearer auth only when a key is configured; read per call so the env can change."""
        key = self._api_key or next((os.environ[n] for n in API_KEY_ENV if os.environ.get(n)), None)
        return {"Authorization": f"Bearer {key}"} if key else {}

    @staticmethod
    def _body(params: GenParams, stop: tuple[str, ...]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }
        if stop:
            body["stop"] = list(stop)
        return body

    def _post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries; returns the decoded JSON or raises LLMError."""
        url = f"{self.base_url}/{endpoint}"
        start = time.perf_counter()
        try:
            resp = request_with_retries(
                self._client,
                "POST",
                url,
                server="LLM server",
                error=LLMError,
                timeout=self.timeout,
                retries=self.retries,
                backoff=self.backoff,
                json=body,
                headers=self._headers(),
            )
        finally:
            self.last_seconds = time.perf_counter() - start
        try:
            data = resp.json()
        except ValueError as exc:
            raise LLMError(f"LLM server at {url} answered with non-JSON: {resp.text[:200]!r}") from exc
        if not isinstance(data, dict):
            raise LLMError(f"LLM server at {url} answered with unexpected JSON: {data!r:.200}")
        return data

    def chat(self, messages: list[Message], params: GenParams | None = None) -> str:
        params = params or GenParams()
        body = {"model": self.model, "messages": list(messages), **self._body(params, tuple(params.stop))}
        data = self._post("chat/completions", body)
        try:
            content = data["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LLMError(f"unexpected chat response from {self.base_url}: {data!r:.300}") from exc
        return content or ""

    def complete(self, prompt: str, params: GenParams | None = None) -> str:
        params = params or GenParams()
        body = {"model": self.model, "prompt": prompt, **self._body(params, complete_stops(params))}
        data = self._post("completions", body)
        try:
            text = data["choices"][0]["text"]
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"unexpected completion response from {self.base_url}: {data!r:.300}") from exc
        return text or ""

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"OpenAILLM({self.spec!r})"


def request_with_retries(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    server: str,
    error: type[ConvirError],
    timeout: float,
    retries: int,
    backoff: float,
    **kwargs: Any,
) -> httpx.Response:
    """The successful (< 400) response of ``client.request(method, url, **kwargs)``.

    Shared by every OpenAI-style client (LLM, VLM, images) so they fail alike: connection
    errors, timeouts, 429 and 5xx are retried with exponential backoff (or after the server's
    Retry-After, capped at 30 s); other 4xx fail at once. ``server`` names it in the ``error``.
    """
    problem = ""
    for attempt in range(retries + 1):
        wait = backoff * (2**attempt)
        try:
            resp = client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            problem = f"{server} at {url} did not answer within {timeout:g}s ({type(exc).__name__})"
        except httpx.TransportError as exc:  # connection refused, DNS, reset, ...
            problem = f"cannot reach {server} at {url}: {type(exc).__name__}: {exc} (is it running?)"
        else:
            if resp.status_code == 429 or resp.status_code >= 500:
                problem = f"{server} at {url} failed: HTTP {resp.status_code}: {error_detail(resp)}"
                header = resp.headers.get("retry-after", "")
                if header.replace(".", "", 1).isdigit():
                    wait = min(float(header), _MAX_RETRY_AFTER)
            elif resp.status_code >= 400:
                raise error(
                    f"{server} at {url} rejected the request: HTTP {resp.status_code}: {error_detail(resp)}"
                )
            else:
                return resp
        if attempt < retries:
            time.sleep(wait)
    tries = retries + 1
    raise error(f"{problem} [{tries} attempt{'s' if tries > 1 else ''}]")


def error_detail(resp: httpx.Response) -> str:
    """The server's error message (OpenAI style ``{"error": {"message": ...}}``) or raw text."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300] or resp.reason_phrase
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)[:300]
    return str(data)[:300]

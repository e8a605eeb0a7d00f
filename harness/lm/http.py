"""OpenAI-compatible HTTP backend (chat completions): hosted APIs, vLLM, llama.cpp's server.

- The API key is read from the environment variable the config names (`api_key_env`); it is sent in a header and
  never written to results, logs or error messages: a server that echoes it (in an error body or an answer) has
  its value replaced by REDACTED before anything is parsed, cached, stored or printed.
- Requests run `concurrency` at a time. Connection errors, timeouts, 429 and 5xx are retried with capped exponential
  backoff; when the retries run out the arm stops with one clear line (what was answered is kept, see the cache).
- Every answered request is cached on disk under a hash of the request (URL, model, messages, settings), never
  the key: a rerun costs nothing and a killed run resumes where it stopped.
- A malformed or empty answer, or a prompt longer than the server's context, is a counted failure of that one
  example (`Generation.error`), never a crash.
- Token counts come from the response's `usage`. Budgets before a request (retrieval passages, the `auto` answer
  length) are estimated at 2 characters per token, since the server's tokenizer is not here: answers get room (JSON
  forms measured 2.3 characters per token), and a retrieval arm on a served model packs fewer passages than
  `budget_tokens` would allow with the real tokenizer.
- Label scoring is not offered: a chat API returns log-probabilities of generated tokens only, not of a given
  continuation. Classification arms on this backend generate and parse (invalid answers counted).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import httpx

from harness.lm import constrained
from harness.console import status
from harness.errors import ConfigError, HarnessError
from harness.lm import GENERATE, LM, Generation, cut_answer

CHARS_PER_TOKEN = 2  # generous: SmolLM2's tokenizer measured 2.3 characters per token on the supplier_intake forms
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
REDACTED = "[REDACTED]"


class BackendError(HarnessError):
    """The server could not be used (unreachable after retries, key refused): the arm stops, its answers kept."""


class HTTPChatLM(LM):
    capabilities = frozenset({GENERATE})

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, concurrency: int = 4,
                 timeout_s: float = 60.0, max_retries: int = 4, backoff_s: float = 0.5, backoff_max_s: float = 8.0,
                 temperature: float = 0.0, seed: int | None = 0,
                 cache: bool = True, cache_path: str | None = None, cache_dir: str | None = None, check: bool = True,
                 status=None,
                 transport: httpx.BaseTransport | None = None):
        if not base_url or not str(base_url).startswith(("http://", "https://")):
            raise ConfigError(f"must be an http(s) URL, got {base_url!r}", field="model.base_url")
        if not model:
            raise ConfigError("name the model the server should run", field="model.model")
        for value, name in ((concurrency, "concurrency"), (max_retries + 1, "max_retries")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"must be a positive whole number, got {value!r}", field=f"model.{name}")
        self.base_url, self.model = str(base_url).rstrip("/"), str(model)
        self.api_key_env = api_key_env
        headers = {"Content-Type": "application/json"}
        self._secret = ""
        if api_key_env:
            key = os.environ.get(str(api_key_env))
            if not key:
                raise ConfigError(f"the environment variable {api_key_env} (named by model.api_key_env) is not set",
                                  field="model.api_key_env")
            headers["Authorization"] = f"Bearer {key}"
            self._secret = key
        self.concurrency, self.timeout_s = concurrency, float(timeout_s)
        self.max_retries, self.backoff_s, self.backoff_max_s = int(max_retries), float(backoff_s), float(backoff_max_s)
        self.temperature, self.seed = float(temperature), seed
        root = Path(cache_path).expanduser() if cache_path else Path(cache_dir or "~/.cache/harness").expanduser() / "http"
        self.cache_root = root if cache else None
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout_s,
                                   transport=transport)
        self.counters = {"requests": 0, "retries": 0, "cache_hits": 0, "failures": 0}
        self._lock = threading.Lock()
        self._formats: dict[str, dict] = {}  # constraint key → response_format
        if check:
            self.check()

    # ---- set-up ---------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Reach the server before any work: an unreachable URL or a refused key is one line, here."""
        try:
            r = self.client.get("/models", timeout=min(self.timeout_s, 10.0))
        except httpx.HTTPError as e:
            raise ConfigError(f"cannot reach {self.base_url} ({_reason(e)})", field="model.base_url") from None
        if r.status_code in (401, 403):
            raise ConfigError(f"{self.base_url} refused the API key from {self.api_key_env or '(none)'} "
                              f"(HTTP {r.status_code})", field="model.api_key_env")

    def close(self) -> None:
        self.client.close()

    # ---- prompts ------------------------------------------------------------------------------------------
    def render(self, messages: Sequence[dict]) -> str:
        """The request's messages as JSON: the prompt exactly as sent (the server applies its chat template)."""
        return json.dumps([{"role": m["role"], "content": m["content"]} for m in messages], ensure_ascii=False)

    @staticmethod
    def _messages(prompt: str) -> list[dict]:
        try:
            messages = json.loads(prompt)
            if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
                return messages
        except json.JSONDecodeError:
            pass
        return [{"role": "user", "content": prompt}]

    def count_tokens(self, text: str) -> int:
        return max(1, -(-len(text) // CHARS_PER_TOKEN))  # an estimate: the server's tokenizer is not here

    def score_choices(self, prompts, choices):
        raise ConfigError("an OpenAI-compatible chat API cannot score given continuations; use decode=generate",
                          field="model")

    def describe(self) -> dict:
        return {"backend": "openai-http", "name_or_path": self.model, "base_url": self.base_url,
                "api_key_env": self.api_key_env, "concurrency": self.concurrency, "timeout_s": self.timeout_s,
                "max_retries": self.max_retries, "temperature": self.temperature, "seed": self.seed,
                "token_counts": "from the server's usage"}

    # ---- constrained decoding ---------------------------------------------------------------------------
    def prepare_constraint(self, constraint, arm: str) -> dict:
        """A JSON Schema in OpenAI's structured-output subset goes with each request as `response_format`; a richer
        schema, or a label set (chat APIs take no grammar), leaves the arm unconstrained, with a warning."""
        report = {"kind": constraint.kind, "library": "openai response_format"}
        if constraint.kind != constrained.JSON_SCHEMA:
            why = "an OpenAI-compatible API takes a JSON Schema, not a label set"
        else:
            missing = constrained.unsupported(constraint.schema, constrained.SUPPORTED["openai"])
            why = (f"the schema uses {', '.join(f'{k} at {p}' for p, k in missing)}, outside the structured-output "
                   f"subset every server accepts" if missing else "")
        if why:
            status(f"[yellow]warning:[/yellow] {arm}: constrained decoding off: {why}")
            return {**report, "on": False, "why": why}
        self._formats[constraint.key()] = {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": dict(constraint.schema), "strict": _strict(constraint.schema)}}
        return {**report, "on": True, "compile_s": 0.0}

    # ---- generation ---------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = (),
                 max_sentences: int | None = None, constraint=None) -> list[Generation]:
        """The server ends at its end of turn and at the stop strings (sent as `stop`, so the tokens after them
        are neither generated nor paid for); the sentence limit is applied to the answer as every backend does.
        `constraint` (prepared): its schema is sent as `response_format`; the server enforces it."""
        fmt = self._formats[constraint.key()] if constraint is not None else None
        gens = self._generate(prompts, max_new_tokens, stop, fmt)
        if stop or max_sentences:
            for g in gens:
                g.text = cut_answer(g.text, stop, max_sentences)
        return gens

    def _generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str],
                  response_format: dict | None = None) -> list[Generation]:
        bodies = []
        for p in prompts:
            body = {"model": self.model, "messages": self._messages(p), "max_tokens": int(max_new_tokens),
                    "temperature": self.temperature}
            if self.seed is not None:
                body["seed"] = self.seed
            if stop:
                body["stop"] = list(stop)
            if response_format:
                body["response_format"] = response_format
            bodies.append(body)
        if self.concurrency == 1 or len(bodies) == 1:
            return [self._one(b) for b in bodies]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._one, bodies))

    def _cache_path(self, body: dict) -> Path | None:
        if self.cache_root is None:
            return None
        key = hashlib.sha256(json.dumps({"url": self.base_url, "body": body}, sort_keys=True).encode()).hexdigest()
        return self.cache_root / key[:2] / f"{key}.json"

    def _one(self, body: dict) -> Generation:
        path = self._cache_path(body)
        if path is not None and path.is_file():
            try:
                entry = json.loads(path.read_text())
                self._count("cache_hits")
                return _generation(entry["response"], entry["seconds"])
            except (json.JSONDecodeError, KeyError, OSError):
                pass  # an unreadable cache entry is asked again
        start = time.perf_counter()
        response = self._post(body)
        seconds = time.perf_counter() - start
        if isinstance(response, Generation):  # a counted failure of this example
            self._count("failures")
            response.latency_s = seconds
            return response
        gen = _generation(response, seconds)
        if gen.error:
            self._count("failures")
        elif path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".part") as f:
                json.dump({"response": response, "seconds": seconds}, f)
            os.replace(f.name, path)
        return gen

    def _post(self, body: dict) -> dict | Generation:
        attempt, last = 0, ""
        while True:
            self._count("requests")
            try:
                r = self.client.post("/chat/completions", json=body)
            except httpx.HTTPError as e:
                last = _reason(e)
            else:
                if r.status_code == 200:
                    try:
                        data = json.loads(self.scrub(r.text))
                    except ValueError:
                        return Generation("", 0, 0, 0.0, error="malformed response (not JSON)")
                    return data if isinstance(data, dict) else Generation("", 0, 0, 0.0, error="malformed response")
                if r.status_code in (401, 403):
                    raise BackendError(f"{self.base_url} refused the API key (HTTP {r.status_code})")
                if r.status_code not in RETRY_STATUS:  # 400 etc.: this request is wrong, asking again will not help
                    detail = self.scrub(_detail(r))
                    context = any(w in detail.lower() for w in ("context", "too long", "exceed", "n_ctx"))
                    return Generation("", 0, 0, 0.0, truncated=context,
                                      error=("prompt longer than the server's context: " if context else
                                             f"HTTP {r.status_code}: ") + detail[:200])
                last = f"HTTP {r.status_code}"
            if attempt >= self.max_retries:
                raise BackendError(f"{self.base_url} did not answer ({last}) after {self.max_retries} retries; "
                                   f"answers so far are cached and a rerun resumes")
            delay = min(self.backoff_max_s, self.backoff_s * 2 ** attempt) * (0.5 + random.random() / 2)
            attempt += 1
            self._count("retries")
            time.sleep(delay)

    def scrub(self, text: str) -> str:
        """The text with the API key's value replaced: servers may echo the request's headers."""
        return text.replace(self._secret, REDACTED) if self._secret else text

    def _count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1


def _strict(schema) -> bool:
    """OpenAI's strict mode needs every object closed and every property required."""
    if isinstance(schema, dict):
        if "properties" in schema and (schema.get("additionalProperties") is not False
                                       or set(schema.get("required", ())) != set(schema["properties"])):
            return False
        return all(_strict(v) for v in schema.values())
    if isinstance(schema, (list, tuple)):
        return all(_strict(v) for v in schema)
    return True


def _reason(e: Exception) -> str:
    if isinstance(e, httpx.TimeoutException):
        return "timed out"
    if isinstance(e, httpx.ConnectError):
        return "connection refused"
    return type(e).__name__


def _detail(r: httpx.Response) -> str:
    try:
        data = r.json()
        err = data.get("error", data) if isinstance(data, dict) else data
        return str(err.get("message", err) if isinstance(err, dict) else err)
    except ValueError:
        return r.text.strip().splitlines()[0] if r.text.strip() else "(empty body)"


def _generation(response: dict, seconds: float) -> Generation:
    """A chat-completions response → Generation; anything malformed or empty is a counted failure."""
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
    tokens_in, tokens_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    try:
        text = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return Generation("", tokens_in, tokens_out, seconds, error="malformed response (no choices[0].message)")
    if not isinstance(text, str) or not text.strip():
        return Generation("", tokens_in, tokens_out, seconds, error="empty response")
    return Generation(text.strip(), tokens_in, tokens_out, seconds)

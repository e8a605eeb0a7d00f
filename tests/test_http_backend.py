"""The OpenAI-compatible HTTP backend's own logic, fast (an in-process transport stands in for the network here;
the real llama.cpp server is exercised in test_server.py)."""

import json

import httpx
import pytest

from harness.errors import ConfigError
from harness.lm.http import BackendError, HTTPChatLM

OK = {"choices": [{"message": {"role": "assistant", "content": " billing "}}],
      "usage": {"prompt_tokens": 11, "completion_tokens": 2}}


def make(handler, tmp_path, **kwargs):
    settings = {"concurrency": 2, "backoff_s": 0.0, "backoff_max_s": 0.0, "max_retries": 2,
                "cache_path": str(tmp_path), "check": False, **kwargs}
    return HTTPChatLM("http://server.test/v1", "m", transport=httpx.MockTransport(handler), **settings)


def test_answers_usage_and_the_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sk-secret-123")
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, json=OK)
    lm = make(handler, tmp_path, api_key_env="TEST_KEY")
    prompts = [lm.render([{"role": "user", "content": f"q{i}"}]) for i in range(3)]
    gens = lm.generate(prompts, 8)
    assert [g.text for g in gens] == ["billing"] * 3 and gens[0].input_tokens == 11 and gens[0].output_tokens == 2
    assert seen[0].headers["authorization"] == "Bearer sk-secret-123"
    bodies = sorted((json.loads(r.content) for r in seen), key=lambda b: b["messages"][0]["content"])  # 2 threads
    assert bodies[0]["messages"] == [{"role": "user", "content": "q0"}] and bodies[0]["temperature"] == 0.0
    again = make(handler, tmp_path, api_key_env="TEST_KEY")  # a rerun: answered from disk, nothing sent
    assert [g.text for g in again.generate(prompts, 8)] == ["billing"] * 3
    assert len(seen) == 3 and again.counters["cache_hits"] == 3 and again.counters["requests"] == 0
    stored = "".join(p.read_text() for p in tmp_path.rglob("*.json"))
    assert "sk-secret" not in stored and "sk-secret" not in json.dumps(lm.describe())


def test_missing_key_variable_is_one_line_at_start(monkeypatch, tmp_path):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError) as e:
        make(lambda r: httpx.Response(200, json=OK), tmp_path, api_key_env="NO_SUCH_KEY")
    assert "NO_SUCH_KEY" in str(e.value) and e.value.field == "model.api_key_env"


def test_retries_on_429_and_5xx_then_succeeds(tmp_path):
    answers = iter([httpx.Response(429), httpx.Response(503), httpx.Response(200, json=OK)])
    lm = make(lambda r: next(answers), tmp_path, concurrency=1)
    assert lm.generate([lm.render([{"role": "user", "content": "x"}])], 4)[0].text == "billing"
    assert lm.counters["retries"] == 2 and lm.counters["requests"] == 3


def test_retries_run_out_with_a_clear_error(tmp_path):
    lm = make(lambda r: httpx.Response(500), tmp_path, concurrency=1)
    with pytest.raises(BackendError, match="did not answer .HTTP 500. after 2 retries"):
        lm.generate([lm.render([{"role": "user", "content": "x"}])], 4)
    assert lm.counters["requests"] == 3


@pytest.mark.parametrize("response, error", [
    (httpx.Response(200, text="<html>oops"), "malformed response (not JSON)"),
    (httpx.Response(200, json={"choices": []}), "malformed response (no choices[0].message)"),
    (httpx.Response(200, json={"choices": [{"message": {"content": ""}}]}), "empty response"),
    (httpx.Response(400, json={"error": {"message": "maximum context length is 512 tokens"}}),
     "prompt longer than the server's context"),
])
def test_malformed_empty_and_too_long_are_counted_failures_not_crashes(tmp_path, response, error):
    lm = make(lambda r: response, tmp_path, concurrency=1)
    gen = lm.generate([lm.render([{"role": "user", "content": "x"}])], 4)[0]
    assert gen.text == "" and gen.error.startswith(error) and lm.counters["failures"] == 1
    assert not list(tmp_path.rglob("*.json"))  # failures are not cached: a rerun asks again


def test_refused_key_stops_the_arm(tmp_path):
    lm = make(lambda r: httpx.Response(401), tmp_path, concurrency=1)
    with pytest.raises(BackendError, match="refused the API key"):
        lm.generate([lm.render([{"role": "user", "content": "x"}])], 4)


def test_an_http_arm_cannot_score_labels_and_auto_generates(tmp_path):
    from harness import inference
    from harness.task import load_task

    task = load_task("tasks/tiny")
    lm = make(lambda r: httpx.Response(200, json=OK), tmp_path)
    assert inference.resolve_decode(task, lm, "auto", "big") == "generate"
    with pytest.raises(ConfigError) as e:
        inference.resolve_decode(task, lm, "score", "big")
    assert "arm 'big'" in str(e.value) and "openai-http" in str(e.value) and e.value.field == "strategies.big.decode"

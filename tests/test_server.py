"""A real llama.cpp OpenAI-compatible server (llama-cpp-python, packaged SmolLM2 GGUF) on 127.0.0.1: an arm served
over HTTP next to arms on the local model, and the faults a served arm meets. Marked `server`; part of `make test`."""

import json
import subprocess
import sys
import time

import pytest

from harness.lm.http import BackendError, HTTPChatLM
from harness.lm.server import LlamaServer, free_port
from tests.conftest import ROOT, run_harness

pytestmark = pytest.mark.server
MODEL = "packaged:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def server():
    with LlamaServer(MODEL, n_threads=2) as s:
        yield s


def _http_arm(url: str, arm: str = "prompt_only", cache=None, **settings) -> list[str]:
    out = [f"+model@strategies.{arm}.model=llama_server", f"strategies.{arm}.model.base_url={url}"]
    if cache is not None:  # the response cache of this test only (the run's cache_dir holds the converted model)
        out.append(f"strategies.{arm}.model.cache_path={cache}")
    return out + [f"strategies.{arm}.model.{k}={v}" for k, v in settings.items()]


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_an_arm_served_over_http_beside_arms_on_the_local_model(server, tmp_path):
    out = tmp_path / "run"
    args = ("task=tiny", "strategies=[zero_shot,prompt_only]", f"results_dir={out}", "strategies.prompt_only.shots=4",
            "forgetting.control=none", *_http_arm(server.base_url, cache=tmp_path / "http"))
    r = run_harness(*args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    comparison = json.loads((out / "comparison.json").read_text())
    arms = comparison["strategies"]
    assert arms["zero_shot"]["model"]["backend"] == "transformers"
    served = arms["prompt_only"]
    assert served["model"]["backend"] == "openai-http" and served["model"]["base_url"] == server.base_url
    assert served["served_by_api"] and not arms["zero_shot"]["served_by_api"]  # recorded when the result is built
    assert served["n"] == 12 and served["usage"]["input_tokens"]["mean"] > 50  # token counts from the server
    assert served["usage"]["backend"]["requests"] == 12 and served["usage"]["failed"] == 0
    assert "generation" in served["summary"]  # a chat API cannot score labels: auto generates and parses
    assert "openai-http" in r.stdout  # the table names each arm's backend
    # a rerun of the same arm into a new folder costs nothing: every answer comes from the disk cache
    r = run_harness(*[a for a in args if not a.startswith("results_dir")], f"results_dir={tmp_path / 'again'}")
    assert r.returncode == 0, r.stderr[-2000:]
    usage = json.loads((tmp_path / "again" / "prompt_only" / "usage.json").read_text())
    assert usage["backend"]["requests"] == 0 and usage["backend"]["cache_hits"] == 12
    assert _lines(tmp_path / "again" / "prompt_only" / "predictions.jsonl") == _lines(
        out / "prompt_only" / "predictions.jsonl")


def test_unreachable_server_is_one_line_before_any_work(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    out = tmp_path / "run"
    r = run_harness("task=tiny", "strategies=[zero_shot,prompt_only]", f"results_dir={out}", *_http_arm(url))
    assert r.returncode == 2
    errors = [line for line in r.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "arm 'prompt_only'" in errors[0] and "cannot reach" in errors[0], r.stdout
    assert "Traceback" not in r.stderr and not (out / "zero_shot").exists()


def test_a_lora_arm_on_a_served_model_is_refused_at_config_time(server, tmp_path):
    r = run_harness("task=tiny", "strategies=[lora]", f"results_dir={tmp_path / 'run'}",
                    *_http_arm(server.base_url, "lora"))
    assert r.returncode == 2 and "arm 'lora' trains an adapter" in r.stdout and "openai-http" in r.stdout
    assert not (tmp_path / "run" / "lora").exists()


def test_server_killed_mid_run_then_rerun_completes_without_duplicates(tmp_path):
    port = free_port()
    srv = LlamaServer(MODEL, port=port, n_threads=2).start()
    out = tmp_path / "run"
    args = ["task=support_triage", "strategies=[prompt_only]", "limit.heldout=24", f"results_dir={out}",
            "write_every=2", "forgetting.control=none", "checks.near_duplicates=false",
            # resumption is tested here, not the verdict: the 135M model's generated labels are often invalid, and
            # an arm over decision.max_failure_rate is never chosen (a run with no choosable arm exits 1)
            "decision.max_failure_rate=0.99",
            # a stopped server refuses at once; the timeout only has to outlast a slow answer on a loaded machine
            *_http_arm(srv.base_url, cache=tmp_path / "http", max_retries=1, backoff_s=0.1, timeout_s=60)]
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = out / "prompt_only" / "predictions.jsonl"
    deadline = time.monotonic() + 600  # generous: on a loaded 2-core machine the first answers took over 120 s
    while time.monotonic() < deadline and proc.poll() is None and not (log.exists() and len(_lines(log)) >= 4):
        time.sleep(0.2)
    srv.stop()  # killed mid-run
    stdout, stderr = proc.communicate(timeout=120)
    try:
        assert log.exists(), "no prediction written before the server was stopped: " + stdout[-2000:] + stderr[-2000:]
        assert proc.returncode == 1, stdout[-2000:] + stderr[-2000:]
        error = json.loads((out / "prompt_only" / "error.json").read_text())
        assert "did not answer" in error["error"] and error["traceback"] is None
        done_before = len(_lines(log))
        assert 4 <= done_before < 24
        srv.start()  # back on the same port: the rerun resumes
        r = run_harness(*args)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        ids = [rec["id"] for rec in _lines(log)]
        assert len(ids) == 24 and len(set(ids)) == 24  # every example once: no duplicated prediction
        usage = json.loads((out / "prompt_only" / "usage.json").read_text())
        backend = usage["backend"]  # each example not done before is asked once or comes from the cache
        assert backend["requests"] - backend["retries"] == 24 - done_before - backend["cache_hits"]
    finally:
        srv.stop()


def test_a_server_that_stops_answering_times_out_retries_then_fails_clearly(server, tmp_path):
    lm = HTTPChatLM(server.base_url, "m", concurrency=1, timeout_s=1, max_retries=2, backoff_s=0.1,
                    cache_path=str(tmp_path))
    prompt = lm.render([{"role": "user", "content": "Say hello."}])
    server.pause()  # accepts connections, never answers
    try:
        start = time.monotonic()
        with pytest.raises(BackendError, match=r"did not answer \(timed out\) after 2 retries"):
            lm.generate([prompt], 8)
        assert lm.counters["requests"] == 3 and lm.counters["retries"] == 2
        assert time.monotonic() - start < 10
    finally:
        server.resume()
    assert lm.generate([prompt], 8)[0].text  # answering again once it is back


def test_a_prompt_longer_than_the_server_context_is_a_counted_failure(server, tmp_path):
    lm = HTTPChatLM(server.base_url, "m", concurrency=1, cache_path=str(tmp_path))
    gen = lm.generate([lm.render([{"role": "user", "content": "word " * 10000}])], 8)[0]  # n_ctx is 8192
    assert gen.text == "" and gen.truncated and gen.error.startswith("prompt longer than the server's context")
    assert lm.counters["failures"] == 1

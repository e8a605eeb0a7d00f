"""The llama.cpp backend on the packaged GGUF against the transformers backend on the converted model: the demo's
prompts render to the same text and tokens, greedy generation gives the same text and label scoring the same
argmax (the log-probabilities differ slightly: llama.cpp computes with the Q4_1 weights, transformers with them
de-quantized to fp32)."""

import numpy as np
import pytest

from harness.prompts import PromptTemplate, build_messages, pick_demos
from harness.task import load_task

pytestmark = pytest.mark.slow
MODEL = "packaged:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def backends():
    from harness.lm.hf import TransformersLM
    from harness.lm.llamacpp import LlamaCppLM

    lc = LlamaCppLM(MODEL)
    yield TransformersLM(MODEL), lc
    lc.close()


def test_llamacpp_matches_transformers_on_the_demo_prompts(backends):
    hf, lc = backends
    task = load_task("tasks/support_triage")
    demos = pick_demos(task, 4, 0)
    messages = [build_messages(task, PromptTemplate(), ex, demos) for ex in task.heldout[:6]]
    prompts = [hf.render(m) for m in messages]
    assert prompts == [lc.render(m) for m in messages]
    assert [hf.encode(p)[0] for p in prompts] == [lc.encode(p)[0] for p in prompts]
    assert [g.text for g in hf.generate(prompts, 24)] == [g.text for g in lc.generate(prompts, 24)]
    labels = [task.text_of(label) for label in task.labels]
    assert hf.answer_end == lc.answer_end == "<|im_end|>"  # both score a label as the answer and its end of turn
    assert [hf.answer_ids(label) for label in labels] == [lc.answer_ids(label) for label in labels]
    a, b = hf.score_choices(prompts, labels), lc.score_choices(prompts, labels)
    assert [int(np.argmax(s.logprobs)) for s in a] == [int(np.argmax(s.logprobs)) for s in b]
    assert max(abs(x - y) for s, t in zip(a, b) for x, y in zip(s.logprobs, t.logprobs)) < 1.0


def test_llamacpp_generates_a_form_on_the_extraction_task(backends):
    _, lc = backends
    task = load_task("tasks/supplier_intake")
    prompt = lc.render(build_messages(task, PromptTemplate(), task.heldout[0], pick_demos(task, 2, 0)))
    gen = lc.generate([prompt], 96)[0]
    assert gen.output_tokens > 0 and gen.input_tokens == lc.count_tokens(prompt) and not gen.truncated


def test_llamacpp_ends_answers_as_transformers_does(backends):
    """Stop strings and the sentence limit end a llama.cpp completion where they end a transformers one, and it
    stops generating there (fewer tokens than the same prompt without them)."""
    hf, lc = backends
    task = load_task("tasks/hr_policy_qa")
    demos = pick_demos(task, 3, 0)
    prompts = [hf.render(build_messages(task, PromptTemplate(), ex, demos)) for ex in task.heldout[:4]]
    free = lc.generate(prompts, 48)
    ended = lc.generate(prompts, 48, stop=["\n"], max_sentences=1)
    assert [g.text for g in ended] == [g.text for g in hf.generate(prompts, 48, stop=["\n"], max_sentences=1)]
    for f, e in zip(free, ended):
        assert "\n" not in e.text and f.text.startswith(e.text) and e.output_tokens <= f.output_tokens
    assert sum(e.output_tokens for e in ended) < sum(f.output_tokens for f in free)


@pytest.mark.parametrize("cpuinfo,setting,expected", [
    ("flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile amx_int8", "auto", False),  # Sapphire Rapids: off
    ("flags\t\t: fpu avx512f avx512_bf16 avx512_vnni", "auto", True),                  # Zen 4: as before
    ("flags\t\t: fpu avx2", "auto", True),
    ("flags\t\t: fpu amx_int8", True, True),
    ("flags\t\t: fpu avx2", False, False),
])
def test_extra_weight_buffers_are_off_on_a_cpu_with_amx(cpuinfo, setting, expected):
    from harness.lm.llamacpp_cpu import use_extra_buffers

    assert use_extra_buffers(setting, cpuinfo) is expected


def test_plain_weight_buffers_load_without_extra_buffers_and_restore_the_default():
    import llama_cpp.llama_cpp as api

    from harness.errors import ConfigError
    from harness.lm.llamacpp_cpu import plain_weight_buffers, use_extra_buffers

    before = api.llama_model_default_params
    assert before().use_extra_bufts  # llama.cpp's default: repacked (AMX where compiled in) buffers
    with plain_weight_buffers():
        assert not api.llama_model_default_params().use_extra_bufts
    with plain_weight_buffers(False):
        assert api.llama_model_default_params is before
    assert api.llama_model_default_params is before
    with pytest.raises(ConfigError, match="extra_buffers"):
        use_extra_buffers("sometimes")

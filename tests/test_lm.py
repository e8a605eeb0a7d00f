import pytest
import torch

from harness.lm import plain_prompt
from harness.lm.hf import TransformersLM
from harness.prompts import PromptTemplate, build_messages
from harness.task import load_task
from tests.conftest import ROOT

LABELS = ["positive", "negative", "not sure at all", "mixed feelings here"]  # single- and multi-token


def reference_scores(lm, messages, choices):
    """Reference, written apart from the scorer: for each label, the whole conversation with the label as the
    assistant's answer is written as text by the tokenizer's own chat template (or the plain format), tokenized at
    once and run in one full forward pass. The label's score sums the log-probabilities of every token after the
    prompt: up to and including the tokenizer's EOS (end of turn) with a chat template; in the plain format,
    everything the format writes after the prompt (the answer and its line end)."""
    tok, special = lm.tokenizer, not lm.use_chat
    render = ((lambda m, gen: tok.apply_chat_template(m, tokenize=False, add_generation_prompt=gen)) if lm.use_chat
              else (lambda m, gen: plain_prompt(m)))
    prompt = render(messages, True)
    p_ids = tok(prompt, add_special_tokens=special).input_ids
    out = []
    for c in choices:
        full = render([*messages, {"role": "assistant", "content": c}], False)
        ids = tok(full, add_special_tokens=special).input_ids
        assert full.startswith(prompt) and ids[:len(p_ids)] == p_ids
        answer = ids[len(p_ids):]
        if lm.use_chat:
            answer = answer[:answer.index(tok.eos_token_id) + 1]
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([p_ids + answer])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        out.append(sum(logp[len(p_ids) - 1 + j, t].item() for j, t in enumerate(answer)))
    return out


def messages_for(n, demos=2):
    task = load_task(ROOT / "tasks" / "tiny")
    return [build_messages(task, PromptTemplate(), ex, task.train[:demos]) for ex in task.heldout[:n]]


def prompts_for(lm, n, demos=2):
    return [lm.render(m) for m in messages_for(n, demos)]


def check_against_reference(lm, messages):
    prompts = [lm.render(m) for m in messages]
    for m, prompt, scored in zip(messages, prompts, lm.score_choices(prompts, LABELS)):
        assert scored.logprobs == pytest.approx(reference_scores(lm, m, LABELS), abs=1e-4)
        assert scored.input_tokens == lm.count_tokens(prompt)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prefix_scoring_equals_the_reference(tiny_model, attn):
    lm = TransformersLM(str(tiny_model), batch_size=3, attn_implementation=attn)
    assert lm._shared_prefix([lm.encode(p)[0] for p in prompts_for(lm, 7)]) > 0  # the demos form a shared prefix
    check_against_reference(lm, messages_for(7))


def test_plain_prompt_format_without_chat_template(tiny_plain_model):
    lm = TransformersLM(str(tiny_plain_model), batch_size=2)
    assert not lm.use_chat and lm.separator == " "
    assert prompts_for(lm, 1)[0].rstrip().endswith("Answer:")
    check_against_reference(lm, messages_for(3))


def test_batched_generation_matches_one_by_one(tiny_model):
    lm = TransformersLM(str(tiny_model), batch_size=4)
    prompts = prompts_for(lm, 4, demos=0)
    batched = lm.generate(prompts, max_new_tokens=6)
    single = [lm.generate([p], max_new_tokens=6)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.output_tokens <= 6 and g.input_tokens == lm.count_tokens(p) for g, p in zip(batched, prompts))


def test_too_long_input_is_truncated_and_counted(tiny_model):
    lm = TransformersLM(str(tiny_model), max_length=160)
    long_prompt = lm.render([{"role": "system", "content": "Classify."},
                             {"role": "user", "content": "very bad product " * 200}])
    scored = lm.score_choices([long_prompt, prompts_for(lm, 1, demos=0)[0]], LABELS)
    assert scored[0].truncated and scored[0].input_tokens <= 160 - 3
    assert not scored[1].truncated
    gen = lm.generate([long_prompt], max_new_tokens=4)[0]
    assert gen.truncated and gen.input_tokens + 4 <= 160


def test_scoring_without_a_shared_prefix(tiny_model):
    lm = TransformersLM(str(tiny_model), batch_size=2)
    messages = [[{"role": "user", "content": text}]
                for text in ("one short prompt", "a different, longer prompt about a broken kettle")]
    assert lm._shared_prefix([lm.encode(lm.render(m))[0] for m in messages]) == 0
    check_against_reference(lm, messages)


def test_sliding_window_model_scores_like_its_own_attention(tiny_model, tmp_path):
    """Gemma 3 style local layers: label scoring (no shared-prefix cache, a per-layer-type mask) must equal the
    model's native forward pass, also when prompts are longer than the window."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=6,
                              layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                              bos_token_id=tokenizer.bos_token_id, initializer_range=0.5)
    Gemma3ForCausalLM(config).save_pretrained(tmp_path / "gemma")
    tokenizer.save_pretrained(tmp_path / "gemma")
    for attn in ("sdpa", "eager"):
        lm = TransformersLM(str(tmp_path / "gemma"), batch_size=3, attn_implementation=attn)
        assert lm.sliding_window == 6
        check_against_reference(lm, messages_for(5))

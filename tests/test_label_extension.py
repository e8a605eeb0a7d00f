"""A label that extends another ("insurance" / "insurance change") must be able to win: a label is scored as the
whole answer, its tokens and the terminator the model writes after an answer, and LoRA training ends its targets
with the same terminator."""

import pytest
import torch

from harness.lm import end_of_answer
from harness.lm.hf import TransformersLM
from harness.lm.training import encode_pairs

SYSTEM = {"role": "system", "content": "Classify the request."}
DATA = {"insurance": ["what does my insurance cover", "is dental in the insurance", "insurance for glasses"],
        "insurance change": ["switch my plan to family", "I moved and need a new plan", "add my wife to my plan"]}


def conversation(tok, text, label=None):
    """Token ids of the conversation written by the chat template (the answer cut after its end of turn), and the
    prompt's length: what a model sees at training and at inference, written without the harness's scorer."""
    user = [SYSTEM, {"role": "user", "content": text}]
    prompt = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    p_ids = tok(prompt, add_special_tokens=False).input_ids
    if label is None:
        return p_ids, len(p_ids)
    full = tok(tok.apply_chat_template([*user, {"role": "assistant", "content": label}], tokenize=False),
               add_special_tokens=False).input_ids
    return full[:full.index(tok.eos_token_id, len(p_ids)) + 1], len(p_ids)


def test_end_of_answer_stops_at_the_first_stop_token_else_a_special_one():
    assert end_of_answer([7, 2, 5], stop_ids={2}, special_ids={5}) == [7, 2]
    assert end_of_answer([7, 8, 5, 2], stop_ids={9}, special_ids={5, 2}) == [7, 8, 5]
    assert end_of_answer([7, 8], stop_ids={2}, special_ids={5}) == []


def test_answer_end_is_the_end_of_turn_or_the_plain_line_end(tiny_model, tiny_plain_model):
    chat, plain = TransformersLM(str(tiny_model)), TransformersLM(str(tiny_plain_model))
    assert chat.answer_end == "<|im_end|>" and plain.answer_end == "\n\n"
    assert chat.answer_ids("positive")[-1] == chat.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert chat.describe()["answer_end"] == "<|im_end|>"  # part of the arm fingerprint and the adapter cache key


def test_lora_targets_end_with_the_terminator_scoring_reads(tiny_model, tiny_plain_model):
    lm = TransformersLM(str(tiny_model))
    prompt = lm.render([SYSTEM, {"role": "user", "content": "switch my plan to family"}])
    (encoded,), _ = encode_pairs(lm, [(prompt, "insurance change")], 256)
    full, n = conversation(lm.tokenizer, "switch my plan to family", "insurance change")
    assert encoded.ids == full and encoded.target_len == len(full) - n
    plain = TransformersLM(str(tiny_plain_model))
    (encoded,), _ = encode_pairs(plain, [("Classify.\n\nhi\nAnswer:", "insurance")], 256)
    assert plain.tokenizer.decode(encoded.ids[-encoded.target_len:]) == " insurance\n\n"


def test_a_label_that_extends_another_can_win(tiny_model):
    lm = TransformersLM(str(tiny_model), batch_size=4)
    tok = lm.tokenizer
    short, long = (tok(label, add_special_tokens=False).input_ids for label in DATA)
    assert long[:len(short)] == short  # the shape that made the shorter label unbeatable without a terminator
    # teach the tiny model both answers: full fine-tuning on conversations written by the chat template
    torch.manual_seed(0)
    rows = [conversation(tok, text, label) for label, texts in DATA.items() for text in texts]
    opt = torch.optim.AdamW(lm.model.parameters(), lr=3e-3)
    lm.model.train()
    for _ in range(40):
        for ids, n in rows:
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0, n - 1:-1]
            loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(ids[n:]))
            loss.backward()
            opt.step()
            opt.zero_grad()
    lm.model.eval()
    labels = list(DATA)
    for label, texts in DATA.items():
        prompts = [lm.render([SYSTEM, {"role": "user", "content": text}]) for text in texts]
        for scored in lm.score_choices(prompts, labels):
            assert labels[max(range(2), key=scored.logprobs.__getitem__)] == label


@pytest.mark.slow
def test_on_the_demo_tokenizer_a_longer_label_is_not_a_sum_extension_of_the_shorter():
    """The packaged model: the shorter label's scored tokens are no prefix of the longer one's (the end of turn
    sits between), so the longer label's score is not the shorter's plus a negative term."""
    lm = TransformersLM("packaged:smollm2-135m-instruct")
    pairs = [("insurance", "insurance change"), ("pto request", "pto request status"),
             ("email query", "email query contact")]
    for short, long in pairs:
        a, b = lm.answer_ids(short), lm.answer_ids(long)
        assert b[:len(a)] != a and a[-1] == b[-1] == lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompt = lm.render([{"role": "system", "content": "Answer with one of: insurance, insurance change."},
                        {"role": "user", "content": "I need to change my insurance plan: insurance change"}])
    scores = lm.score_choices([prompt], ["insurance", "insurance change"])[0].logprobs
    assert scores[1] > scores[0]

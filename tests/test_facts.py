"""Facts vs phrasing: fact extraction and normalisation, fact_recall / answer_exact on hand-made examples, the
task's facts field and answer-end settings, and answers that end (stop strings, sentence limit) on every backend."""

import json
import shutil

import httpx
import pytest

from harness import scoring
from harness.kinds import generation
from harness.errors import TaskError
from harness.facts import content_words, derived_facts, fact_scores, words
from harness.lm import answer_done, cut_answer
from harness.task import load_task

Q_FILE = "How long do you keep my personnel file after I leave?"
Q_JOB = "Could I take a job with another company during my career break?"


def test_words_normalise_numbers_plurals_and_negations():
    assert words("It costs 1,800 euros, not 1800.00!") == ["it", "cost", "1800", "euro", "no", "1800"]
    assert words("Six policies, the 3rd one can't wait") == ["6", "policy", "the", "3", "1", "no", "wait"]
    assert words("Tomasz Reinholt's desk, ext. 4100") == ["tomasz", "reinholt", "desk", "ext", "4100"]
    assert words("It matches two passes and boxes") == ["it", "match", "2", "pass", "and", "box"]
    assert content_words("You get 27 days of leave and 27 more days.") == ["27", "day", "leave"]


def test_derived_facts_leave_out_what_the_question_already_says():
    assert derived_facts("6 years after you leave.", Q_FILE) == ["6", "year"]
    assert derived_facts("No, it can't be used to work for another employer.", Q_JOB) == [
        "no", "used", "work", "employer"]
    assert derived_facts("Your personnel file.", Q_FILE) == ["personnel", "file"]  # nothing new: all of them


def test_fact_recall_credits_the_fact_not_the_phrasing():
    ref = ["6 years after you leave."]
    assert fact_scores("Six years.", ref, Q_FILE) == {"fact_recall": 1.0, "answer_exact": 1}
    assert fact_scores("We keep your file after you leave.", ref, Q_FILE) == {"fact_recall": 0.0, "answer_exact": 0}
    assert fact_scores("For 6 months.", ref, Q_FILE) == {"fact_recall": 0.5, "answer_exact": 0}  # 6, not years
    long_right = "Quillfeather keeps the personnel file of every leaver for 6 years, then deletes it securely."
    assert fact_scores(long_right, ref, Q_FILE)["fact_recall"] == 1.0
    assert generation.token_f1(long_right, ref[0]) < generation.token_f1("We keep your file after you leave.", ref[0])
    wrong = fact_scores("Yes, you can work for another employer.",
                        ["No, it can't be used to work for another employer."], Q_JOB)
    assert wrong == {"fact_recall": 0.5, "answer_exact": 0}  # work, employer of no, used, work, employer


def test_declared_facts_are_phrases_with_alternatives():
    declared = ["10 working days", ["Lantern", "the HR portal"]]
    ref = ["Submit it in Lantern 10 working days ahead."]
    assert fact_scores("Book it in Lantern at least ten working days ahead.", ref, "", declared) == {
        "fact_recall": 1.0, "answer_exact": 1}
    assert fact_scores("Ten days ahead, in the HR portal.", ref, "", declared) == {
        "fact_recall": 0.5, "answer_exact": 0}  # "10 day" is not "10 working day"; the portal counts
    assert fact_scores("Working in Lantern: 10 days.", ref, "", declared)["fact_recall"] == 0.5  # order matters


def test_best_reference_and_answers_without_facts():
    assert fact_scores("27 days.", ["30 days.", "27 days."], "How much leave?")["fact_recall"] == 1.0
    assert fact_scores("it is", ["It is."], "") == {"fact_recall": 1.0, "answer_exact": 1}
    assert fact_scores("it was", ["It is."], "") == {"fact_recall": 0.0, "answer_exact": 0}


def test_scoring_computes_fact_metrics_only_when_asked():
    targets, outputs = ["6 years after you leave.", "27 days."], ["Six years.", "27 days of leave a year."]
    plain = generation.score_texts(targets, outputs)
    assert "fact_recall" not in plain["metrics"] and "fact_recall" not in plain["per_example"][0]
    result = generation.score_texts(targets, outputs, metrics=["fact_recall", "answer_exact"],
                                    inputs=[Q_FILE, "How many days of leave do I get?"],
                                    facts=[None, ["27 days"]])
    assert result["metrics"]["fact_recall"] == 1.0 and result["metrics"]["answer_exact"] == 1.0
    assert scoring.mean_key("fact_recall") == "fact_recall"


def _task(folder, extra_yaml: str = "", heldout=None):
    folder.mkdir(exist_ok=True)
    (folder / "task.yaml").write_text("name: qa\ntype: generation\ninstruction: Answer.\nmetric: fact_recall\n"
                                      + extra_yaml)
    rows = [{"id": "t1", "input": "How much leave?", "target": "27 days."},
            {"id": "t2", "input": "Who approves it?", "target": "Your manager."}]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    held = heldout or [{"id": "h1", "input": "Where do I book?", "target": "In Lantern.", "facts": ["Lantern"]}]
    (folder / "heldout.jsonl").write_text("\n".join(json.dumps(r) for r in held) + "\n")
    return folder


def test_task_declares_facts_stop_and_max_sentences(tmp_path):
    task = load_task(_task(tmp_path / "qa", 'metrics: [answer_exact]\nstop: ["\\n"]\nmax_sentences: 1\n'))
    assert task.metric == "fact_recall" and "answer_exact" in task.metrics
    assert task.stop == ("\n",) and task.max_sentences == 1
    assert task.answer_settings() == {"stop": ["\n"], "max_sentences": 1}
    assert list(task.heldout[0].meta["facts"]) == ["Lantern"]
    assert load_task(_task(tmp_path / "plain")).answer_settings() == {}


@pytest.mark.parametrize("yaml_text, heldout, where", [
    ("max_sentences: 0\n", None, "task.yaml: field 'max_sentences'"),
    ("stop: [1]\n", None, "task.yaml: field 'stop'"),
    ("", [{"id": "h1", "input": "x?", "target": "y", "facts": "Lantern"}], "heldout.jsonl:1: field 'facts'"),
    ("", [{"id": "h1", "input": "x?", "target": "y"}, {"id": "h2", "input": "z?", "target": "y", "facts": [[]]}],
     "heldout.jsonl:2: field 'facts'"),
])
def test_bad_facts_or_answer_end_name_file_line_and_field(tmp_path, yaml_text, heldout, where):
    with pytest.raises(TaskError) as e:
        load_task(_task(tmp_path / "qa", yaml_text, heldout))
    assert where in str(e.value)


def test_answer_end_on_hand_made_text():
    text = "No, it cannot. Each employee e.g. Tom. Also 2.5 days."
    assert cut_answer(text, (), 1) == "No, it cannot."
    assert cut_answer(text, (), 2) == "No, it cannot. Each employee e.g. Tom."
    assert cut_answer('Yes (see "pol-3.") Then more', (), 1) == 'Yes (see "pol-3.")'
    assert cut_answer("\n\nYes, six.\nQuestion: next", ["\n"]) == "Yes, six."  # leading space never ends it
    assert cut_answer("First line\nSecond line", (), 1) == "First line"
    assert not answer_done("27 days.", (), 1) and answer_done("27 days. The", (), 1)
    assert not answer_done("\n27", ["\n"]) and answer_done("\n27\n", ["\n"])


def test_transformers_backend_stops_at_a_stop_string_and_counts_fewer_tokens(tiny_model):
    from harness.lm.hf import TransformersLM

    lm = TransformersLM(str(tiny_model))
    prompt = lm.render([{"role": "user", "content": "How many days of annual leave do I get?"}])
    full = lm.generate([prompt], 24)[0]
    assert len(full.text) > 8, full.text
    stop = full.text[5:7]
    at = full.text.find(stop, 1)
    ended = lm.generate([prompt], 24, stop=[stop])[0]
    assert ended.text == full.text[:at].strip() and ended.output_tokens < full.output_tokens


def test_transformers_backend_ends_at_the_turn_end_of_the_chat_template(tiny_model, tmp_path):
    """A model whose configs name another end-of-sequence token still ends its answer at <|im_end|>."""
    from harness.lm.hf import TransformersLM

    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    bos = json.loads((folder / "config.json").read_text())["bos_token_id"]
    for name in ("config.json", "generation_config.json"):
        data = json.loads((folder / name).read_text())
        data["eos_token_id"] = bos
        (folder / name).write_text(json.dumps(data))
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    tok["eos_token"] = "<|im_start|>"
    (folder / "tokenizer_config.json").write_text(json.dumps(tok))
    lm = TransformersLM(str(folder))
    end = lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert lm.tokenizer.eos_token_id == bos and end in lm.eos_ids


def test_http_backend_sends_stop_strings_and_keeps_one_sentence(tmp_path):
    from harness.lm.http import HTTPChatLM

    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "It is 27 days. Ask Lantern."}}],
                                         "usage": {"prompt_tokens": 9, "completion_tokens": 8}})
    lm = HTTPChatLM("http://server.test/v1", "m", transport=httpx.MockTransport(handler), check=False,
                    cache_path=str(tmp_path))
    gen = lm.generate([lm.render([{"role": "user", "content": "q"}])], 16, stop=["\n"], max_sentences=1)[0]
    assert gen.text == "It is 27 days." and seen[0]["stop"] == ["\n"] and gen.output_tokens == 8


def test_a_run_on_a_short_answer_task_scores_facts_and_records_how_answers_end(tiny_model, tmp_path):
    from tests.conftest import run_harness

    task = _task(tmp_path / "qa", 'metrics: [answer_exact]\nstop: ["\\n"]\nmax_sentences: 1\n',
                 [{"id": f"h{i}", "input": f"Where do I book leave number {i}?", "target": "In Lantern.",
                   "facts": ["Lantern"]} for i in range(4)])
    out = tmp_path / "run"
    r = run_harness(f"task_dir={task}", f"results_dir={out}", "strategies=[zero_shot]", "model=hf",
                    f"model.name_or_path={tiny_model}", "strategies.zero_shot.max_new_tokens=12",
                    "forgetting.control=none", "checks.near_duplicates=false")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["primary_metric"] == "fact_recall"
    assert {"fact_recall", "answer_exact", "token_f1"} <= set(comparison["strategies"]["zero_shot"]["metrics"])
    assert json.loads((out / "zero_shot" / "prepare.json").read_text())["answer_stops"] == {
        "stop": ["\n"], "max_sentences": 1}
    for line in (out / "zero_shot" / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert "\n" not in record["output"] and record["usage"]["output_tokens"] <= 12


def test_forgetting_check_scores_a_generation_control_split_on_its_primary_metric(tiny_model, tmp_path):
    """The task's control split is scored with each example's question and declared facts (fact_recall)."""
    from harness import forgetting
    from harness.lm.hf import TransformersLM

    folder = _task(tmp_path / "qa", 'stop: ["\\n"]\n')
    rows = [{"id": "c1", "input": "Where do I book leave?", "target": "In Lantern.", "facts": ["Lantern"]},
            {"id": "c2", "input": "How many days?", "target": "27 days."}]
    (folder / "control.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    control = forgetting.load_control(load_task(folder), "task")
    values = control.score(TransformersLM(str(tiny_model)))
    assert control.ids == ("c1", "c2") and len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)

"""Constrained decoding (harness/lm/constrained.py) with the real libraries: xgrammar on a tiny random model, llama.cpp's
grammar built from a schema, OpenAI response_format over the HTTP backend; the auto/true/false rules."""

import json
from types import SimpleNamespace

import httpx
import jsonschema
import pytest

from harness.lm import constrained
from harness.errors import ConfigError
from harness.lm.hf import TransformersLM
from harness.strategy import PrepareContext
from harness.task import load_task
from strategies.prompt_only import PromptOnly
from tests.conftest import ROOT

SMALL = {"type": "object",
         "properties": {"kind": {"enum": ["refund", "repair", "other"]}, "urgent": {"type": "boolean"},
                        "count": {"type": "integer", "minimum": 0, "maximum": 99},
                        "code": {"type": ["string", "null"], "pattern": "^[A-Z]{2}$"}},
         "required": ["kind", "urgent", "count", "code"], "additionalProperties": False}
LABELS = ("positive", "negative", "not sure")


@pytest.fixture(scope="module")
def lm(tiny_model):
    return TransformersLM(str(tiny_model), device="cpu", batch_size=4)


def prompts(lm, n):
    return [lm.render([{"role": "user", "content": f"Fill in the form for case {i}, please"}]) for i in range(n)]


def test_a_constrained_decode_can_only_produce_schema_valid_json(lm):
    free = lm.generate(prompts(lm, 6), 60)
    assert not any(constrained_valid(g.text) for g in free)  # the random model alone never writes the form
    c = constrained.Constraint(constrained.JSON_SCHEMA, schema=SMALL)
    report = lm.prepare_constraint(c, "arm")
    assert report["on"] and report["library"] == "xgrammar" and report["compile_s"] >= 0
    gens = lm.generate(prompts(lm, 6), 60, constraint=c)
    for g in gens:
        assert constrained_valid(g.text), g.text
        assert not g.grammar_unfinished and g.grammar_s > 0 and g.output_tokens < 60


def constrained_valid(text: str) -> bool:
    try:
        jsonschema.validate(json.loads(text), SMALL)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def test_an_answer_cut_at_max_new_tokens_is_flagged_unfinished(lm):
    c = constrained.Constraint(constrained.JSON_SCHEMA, schema=SMALL)
    lm.prepare_constraint(c, "arm")
    gens = lm.generate(prompts(lm, 2), 3, constraint=c)
    assert all(g.grammar_unfinished and not constrained_valid(g.text) for g in gens)


@pytest.mark.parametrize("chat", [True, False])
def test_a_constrained_decode_can_only_produce_a_label(chat, tiny_model, tiny_plain_model):
    model = TransformersLM(str(tiny_model if chat else tiny_plain_model), device="cpu")
    c = constrained.Constraint(constrained.LABELS, labels=LABELS)
    assert model.prepare_constraint(c, "arm")["on"]
    free = [g.text for g in model.generate(prompts(model, 5), 12)]
    assert not set(free) & set(LABELS)
    outs = [g.text for g in model.generate(prompts(model, 5), 12, constraint=c)]
    assert set(outs) <= set(LABELS), outs


def fake_task(kind, schema=None, fields=(), labels=()):
    return SimpleNamespace(type=kind, schema=schema, fields=list(fields), labels=list(labels), name="t",
                           text_of=lambda label: label)


def test_auto_true_false_rules():
    extraction = fake_task("extraction", schema=SMALL, fields=list(SMALL["properties"]))
    assert constrained.wanted(extraction, "auto", "generate", "a").kind == constrained.JSON_SCHEMA
    assert constrained.wanted(extraction, False, "generate", "a") is None
    no_schema = fake_task("extraction", fields=["people", "date"])
    assert constrained.wanted(no_schema, "auto", "generate", "a") is None
    derived = constrained.wanted(no_schema, True, "generate", "a").schema
    jsonschema.validate({"people": "4", "date": None}, derived)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"people": "4"}, derived)
    classification = fake_task("classification", labels=LABELS)
    assert constrained.wanted(classification, "auto", "generate", "a").labels == LABELS
    assert constrained.wanted(classification, "auto", "score", "a") is None  # scoring already picks a label
    assert constrained.wanted(fake_task("generation"), "auto", "generate", "a") is None
    with pytest.raises(ConfigError, match="strategies.a.constrained"):
        constrained.wanted(fake_task("generation"), True, "generate", "a")
    assert constrained.parse_setting("off", "a") is False and constrained.parse_setting(True, "a") is True
    with pytest.raises(ConfigError, match="auto, true or false"):
        constrained.parse_setting("sometimes", "a")


def test_an_unsupported_schema_feature_is_left_out_with_a_warning(lm, capsys):
    schema = {**SMALL, "properties": {**SMALL["properties"],
                                      "tags": {"type": "array", "items": {"type": "boolean"}, "uniqueItems": True,
                                               "maxItems": 2}},
              "required": [*SMALL["required"], "tags"]}
    report = lm.prepare_constraint(constrained.Constraint(constrained.JSON_SCHEMA, schema=schema), "arm")
    out = " ".join(capsys.readouterr().out.split())
    assert "uniqueItems at #/properties/tags" in out and "cannot express" in out
    assert report["on"] and report["left_out"] == ["uniqueItems at #/properties/tags"]
    assert constrained.strip(schema, constrained.SUPPORTED["xgrammar"])["properties"]["tags"] == {
        "type": "array", "items": {"type": "boolean"}, "maxItems": 2}


def test_a_grammar_that_does_not_compile_turns_the_constraint_off(capsys):
    def refuse(_):
        raise RuntimeError("bad regex in pattern")
    compiled, report = constrained.compile_for(None, constrained.Constraint(constrained.JSON_SCHEMA, schema=SMALL),
                                               "xgrammar", refuse, "arm")
    assert compiled is None and not report["on"] and "bad regex" in report["why"]
    assert "constrained decoding off" in " ".join(capsys.readouterr().out.split())


def test_llama_cpp_grammar_from_the_task_schema():
    from llama_cpp import LlamaGrammar

    from harness.lm.llamacpp import gbnf, llama_grammar

    schema = constrained.thaw(load_task(ROOT / "tasks" / "supplier_intake").schema)
    text = gbnf(constrained.Constraint(constrained.JSON_SCHEMA, schema=schema))
    assert "[A-Z]" in text and "supplier_name" in text  # the currency pattern survives the type list
    assert "\\d" not in text and "[0-9]" in text  # \d{4}-… spelled as a range GBNF can read
    assert isinstance(llama_grammar(constrained.Constraint(constrained.JSON_SCHEMA, schema=schema)), LlamaGrammar)
    labels = gbnf(constrained.Constraint(constrained.LABELS, labels=('say "hi"', "b")))
    assert labels == 'root ::= "say \\"hi\\"" | "b"'
    assert isinstance(LlamaGrammar.from_string(labels, verbose=False), LlamaGrammar)


def test_http_backend_sends_a_simple_schema_as_response_format(tmp_path, capsys):
    from harness.lm.http import HTTPChatLM

    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": '{"kind": "other"}'}}],
                                         "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    lm = HTTPChatLM("http://server.test/v1", "m", transport=httpx.MockTransport(handler), check=False, cache=False)
    c = constrained.Constraint(constrained.JSON_SCHEMA, schema=SMALL)
    assert lm.prepare_constraint(c, "arm")["on"]
    lm.generate([lm.render([{"role": "user", "content": "q"}])], 8, constraint=c)
    assert seen[0]["response_format"] == {"type": "json_schema",
                                          "json_schema": {"name": "answer", "schema": SMALL, "strict": True}}
    rich = {**SMALL, "properties": {**SMALL["properties"], "n": {"type": "integer", "not": {"const": 3}}}}
    report = lm.prepare_constraint(constrained.Constraint(constrained.JSON_SCHEMA, schema=rich), "arm")
    assert not report["on"] and "not at #/properties/n" in report["why"]
    assert not lm.prepare_constraint(constrained.Constraint(constrained.LABELS, labels=LABELS), "arm")["on"]


def test_an_arm_records_its_constraint_and_keeps_its_fingerprint_when_off(lm, tmp_path):
    task = load_task(ROOT / "tasks" / "tiny")
    scored = PromptOnly(shots=2, calibrate=False, constrained="auto", name="p")
    scored.check(task, lm)
    assert "constrained" not in scored.describe()  # label scoring: off, settings as before
    generating = PromptOnly(shots=2, calibrate=False, decode="generate", constrained="auto", max_new_tokens=8,
                            name="p")
    report = generating.prepare(PrepareContext(task, lm, tmp_path, tmp_path, 0, lambda d, t: (lambda n=1: None)))
    assert generating.describe()["constrained"] == "labels" and report["constrained"]["on"]
    preds = generating.predict(task.heldout[:3])
    assert all(p.output in task.labels and p.usage["constrained"] == "labels" and p.usage["grammar_s"] > 0
               for p in preds)
    off = PromptOnly(shots=2, calibrate=False, decode="generate", constrained=False, max_new_tokens=8, name="p")
    off.check(task, lm)
    assert "constrained" not in off.describe()


@pytest.mark.slow
def test_llama_cpp_constrained_answers_follow_the_schema_and_the_labels(monkeypatch):
    from harness.lm import llamacpp as lm_llamacpp
    from harness.lm.llamacpp import LlamaCppLM

    lm = LlamaCppLM("packaged:smollm2-135m-instruct", n_ctx=1024)
    task = load_task(ROOT / "tasks" / "supplier_intake")
    c = constrained.Constraint(constrained.JSON_SCHEMA, schema=constrained.thaw(task.schema))
    assert lm.prepare_constraint(c, "arm")["on"]
    ask = [lm.render([{"role": "system", "content": task.instruction}, {"role": "user", "content": ex.input}])
           for ex in task.heldout[:2]]
    for g in lm.generate(ask, 160, constraint=c):
        assert g.grammar_unfinished or not list(jsonschema.Draft202012Validator(c.schema).iter_errors(
            json.loads(g.text))), g.text
    labels = constrained.Constraint(constrained.LABELS, labels=LABELS)
    lm.prepare_constraint(labels, "arm")
    assert {g.text for g in lm.generate(ask[:1], 8, constraint=labels)} <= set(LABELS)
    monkeypatch.setattr(lm_llamacpp, "gbnf", lambda c: 'root ::= "\\d"')  # a grammar llama.cpp cannot parse
    report = lm.prepare_constraint(constrained.Constraint(constrained.LABELS, labels=("x",)), "arm")
    assert not report["on"] and "cannot parse" in report["why"]  # refused at set-up, not inside generation



def test_usage_counts_grammar_time_and_unfinished_answers_only_for_constrained_arms():
    from harness.records import Usage

    def summarize_usage(records):
        return Usage.of_predictions(records).to_json()

    base = {"input_tokens": 5, "output_tokens": 3, "latency_s": 0.5}
    assert "grammar_s" not in summarize_usage([{"usage": base}])  # an unconstrained arm's usage.json is as before
    usage = summarize_usage([{"usage": {**base, "constrained": "json_schema", "grammar_s": 0.25}},
                             {"usage": {**base, "constrained": "json_schema", "grammar_s": 0.75,
                                        "grammar_unfinished": True}}])
    assert usage["grammar_s"]["total"] == 1.0 and usage["grammar_unfinished"] == 1

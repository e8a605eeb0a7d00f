"""LoRA arm on tiny random models: it learns, caches, masks the loss to the target, never uses a partial adapter."""

import json
import random

import pytest
import torch

from harness.errors import ConfigError
from harness.lm.hf import TransformersLM
from harness.lm.training import collate, encode_pairs, target_loss
from harness.strategy import PrepareContext
from harness.task import load_task
from strategies.lora import LoRA, lora_defaults, split_dev


def _no_bars(description, total):
    return lambda n=1: None


def _keyword_task(folder, n_train=64, n_heldout=16):
    """A trivial mapping a tiny model can learn in seconds: the colour word decides the label."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.yaml").write_text("type: classification\ninstruction: Which colour?\nlabels: [positive, negative]\n")
    rng = random.Random(0)
    fillers = ["the", "review", "product", "kettle", "plug", "today", "was", "a"]

    def rows(n, prefix):
        out = []
        for i in range(n):
            label = "positive" if i % 2 == 0 else "negative"
            word = "lovely" if label == "positive" else "awful"
            words = rng.sample(fillers, 3) + [word]
            out.append({"id": f"{prefix}{i}", "input": f"{i} " + " ".join(words), "target": label})
        return out
    for split, data in (("train", rows(n_train, "t")), ("heldout", rows(n_heldout, "h"))):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    return load_task(folder, allow_overlap=True)


FAST = dict(rank=16, alpha=16, dropout=0.0, learning_rate=1e-2, epochs=25, batch_size=8, patience=25, dtype="fp32",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def test_tiny_model_learns_a_trivial_mapping_and_the_adapter_is_cached(tiny_model, tmp_path):
    task = _keyword_task(tmp_path / "task")
    lm = TransformersLM(str(tiny_model))
    ctx = PrepareContext(task, lm, tmp_path / "work", tmp_path / "cache", 0, _no_bars)
    before = LoRA(**{**FAST, "epochs": 1, "learning_rate": 1e-9})
    before.prepare(PrepareContext(task, lm, tmp_path / "w0", tmp_path / "cache0", 0, _no_bars))
    acc_before = sum(p.output == ex.target for p, ex in zip(before.predict(task.heldout), task.heldout)) / 16

    arm = LoRA(**FAST)
    report = arm.prepare(ctx)
    history = report["training"]["history"]
    assert not report["cached"] and history[-1]["train_loss"] < history[0]["train_loss"]
    acc = sum(p.output == ex.target for p, ex in zip(arm.predict(task.heldout), task.heldout)) / 16
    assert acc >= 0.8 and acc > acc_before
    t = report["training"]
    assert t["tokens_seen"] > 0 and t["trainable_parameters"] < t["total_parameters"] and t["peak_memory_mb"] > 0
    assert (tmp_path / "cache" / "adapters").is_dir()
    adapter = report["adapter"]
    assert any(p.name == "adapter_model.safetensors" for p in __import__("pathlib").Path(adapter).iterdir())

    again = LoRA(**FAST).prepare(ctx)  # same data, model, settings, seed: nothing is trained
    assert again["cached"] and again["adapter"] == adapter
    other_seed = LoRA(**FAST, seed=1).prepare(ctx)
    assert not other_seed["cached"] and other_seed["adapter"] != adapter


def test_loss_covers_only_target_tokens(tiny_model):
    lm = TransformersLM(str(tiny_model))
    data, _ = encode_pairs(lm, [("prompt one is long", "positive"), ("p2", "negative")], 64)
    batch = collate(data, lm.tokenizer.pad_token_id, "cpu")
    labels = batch["labels"]
    for row, e in enumerate(data):
        assert (labels[row] != -100).sum() == e.target_len  # target + end-of-turn token only
        assert labels[row, -e.target_len:].tolist() == e.ids[-e.target_len:]
    # the target-only logits path gives the same loss as the full-logits path
    full, n_full = target_loss(lm.model, batch, target_only=False)
    part, n_part = target_loss(lm.model, batch, target_only=True)
    assert n_full == n_part == sum(e.target_len for e in data) and torch.allclose(full, part, atol=1e-4)


def test_shared_prefix_loss_and_gradients_equal_the_plain_path(tiny_model):
    from peft import LoraConfig, get_peft_model

    from harness.lm.training import shared_prefix

    lm = TransformersLM(str(tiny_model))
    system = "Route the ticket to billing or refunds. " * 3
    pairs = [(lm.render([{"role": "system", "content": system}, {"role": "user", "content": text}]), label)
             for text, label in [("charged twice", "billing"), ("money back please, it broke", "refunds"),
                                 ("invoice", "billing")]]
    data, _ = encode_pairs(lm, pairs, 256)
    prefix = shared_prefix(data)
    assert len(prefix) > 16
    model = get_peft_model(__import__("copy").deepcopy(lm.model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                            init_lora_weights=False))
    grads = []
    for p in ([], prefix):
        model.zero_grad()
        loss, n = target_loss(model, collate(data, lm.tokenizer.pad_token_id, "cpu", p), True)
        loss.backward()
        grads.append((float(loss), n, [q.grad.clone() for q in model.parameters() if q.requires_grad]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-4) and grads[0][1] == grads[1][1]
    for a, b in zip(grads[0][2], grads[1][2]):
        # float32 in another summation order: relative to the tensor's size (an element near 0 can differ by 1e-4
        # when the largest is 44), where a missing or doubled prefix gradient would be off by whole percents
        assert float((a - b).norm()) <= 1e-5 * float(b.norm())


def test_dev_carve_out_is_stratified_and_small_train_is_refused(tmp_path):
    task = _keyword_task(tmp_path / "task", n_train=40)
    train, dev, source = split_dev(task, 0.2, seed=0)
    assert len(dev) == 8 and {ex.target for ex in dev} == {"positive", "negative"}
    assert not {ex.id for ex in train} & {ex.id for ex in dev} and "carved" in source
    small = _keyword_task(tmp_path / "small", n_train=10)
    with pytest.raises(ConfigError, match="needs at least 12"):
        split_dev(small, 0.15, seed=0)


def test_diverging_training_is_stopped_and_no_adapter_is_kept(tiny_model, tmp_path):
    task = _keyword_task(tmp_path / "task")
    lm = TransformersLM(str(tiny_model))
    arm = LoRA(**{**FAST, "learning_rate": 0.5, "alpha": 100000, "epochs": 3})  # a scale that must blow up
    from harness.lm.training import TrainingDiverged
    with pytest.raises(TrainingDiverged):
        arm.prepare(PrepareContext(task, lm, tmp_path / "w", tmp_path / "cache", 0, _no_bars))
    adapters = tmp_path / "cache" / "adapters"
    assert not [p for p in adapters.iterdir() if p.is_dir()]  # the partial adapter was removed, never cached


def test_out_of_memory_halves_the_batch_and_keeps_the_effective_batch(tiny_model, monkeypatch, tmp_path):
    import harness.lm.training as lora_train

    real, calls = lora_train.train_lora, []

    def short_of_memory(lm, train_pairs, dev_pairs, cfg, *args, **kwargs):
        calls.append((cfg.batch_size, cfg.grad_accum))
        if cfg.batch_size > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(lm, train_pairs, dev_pairs, cfg, *args, **kwargs)

    monkeypatch.setattr(lora_train, "train_lora", short_of_memory)
    lm = TransformersLM(str(tiny_model))
    pairs = [(f"prompt {i}", "positive" if i % 2 else "negative") for i in range(8)]
    report = lm.train_adapter(pairs, pairs[:4], {**lora_defaults(), "batch_size": 8, "epochs": 1, "dtype": "fp32"},
                              tmp_path, 0)
    assert calls == [(8, 1), (4, 2), (2, 4)]
    assert report["oom_retries"] == [{"batch_size": 4, "grad_accum": 2}, {"batch_size": 2, "grad_accum": 4}]


def test_combined_arm_trains_on_retrieval_prompts_without_self_demonstrations(tiny_model, tmp_path):
    from harness.retriever import Retriever
    from strategies.combined import Combined

    task = _keyword_task(tmp_path / "task", n_train=40, n_heldout=4)
    lm = TransformersLM(str(tiny_model))
    arm = Combined(Retriever(), mode="demonstrations", k=2, **{**FAST, "epochs": 1})
    report = arm.prepare(PrepareContext(task, lm, tmp_path / "w", tmp_path / "cache", 0, _no_bars))
    assert report["prompts"]["mode"] == "demonstrations" and report["training"]["epochs_run"] == 1
    train_prompts, retrieved, _ = arm.prompts.build(task.train[:5], exclude_self=True)
    for ex, hits, prompt in zip(task.train[:5], retrieved, train_prompts):
        assert ex.id not in [h["id"] for h in hits] and len(hits) == 2
        assert prompt.count(ex.input) == 1  # only as the input, never as its own demonstration
    preds = arm.predict(task.heldout)
    assert all(p.output in task.labels and len(p.retrieved) == 2 for p in preds)


def test_frozen_weights_held_in_bf16_train_exactly_as_autocast_casting_them(tiny_model, tmp_path, monkeypatch):
    """Under bf16 autocast the frozen base weights are stored in bf16 instead of being cast on every call: the losses
    and the trained adapter must be bitwise the same as with fp32 weights cast by autocast."""
    import harness.lm.training as training
    from safetensors.torch import load_file

    lm = TransformersLM(str(tiny_model))
    task = _keyword_task(tmp_path / "task", n_train=24, n_heldout=4)
    pairs = [(lm.render([{"role": "user", "content": ex.input}]), ex.target) for ex in task.train]
    cfg = training.TrainConfig.from_settings({**lora_defaults(), **FAST, "dtype": "bf16", "dropout": 0.1,
                                              "epochs": 2, "patience": 3, "batch_size": 4})
    runs = {}
    for held in ("bf16", "fp32"):
        if held == "fp32":
            monkeypatch.setattr(training, "frozen_weights_in_bf16", lambda model: 0)
        report = training.train_lora(lm, pairs[:20], pairs[20:], cfg, tmp_path / held, seed=0)
        runs[held] = (report, load_file(str(tmp_path / held / "adapter_model.safetensors")))
    (bf16, weights_bf16), (fp32, weights_fp32) = runs["bf16"], runs["fp32"]
    assert bf16["frozen_weights_bf16"] > 0 and fp32["frozen_weights_bf16"] == 0 and bf16["autocast"] == "bf16"
    assert [(h["train_loss"], h["dev_loss"]) for h in bf16["history"]] == \
        [(h["train_loss"], h["dev_loss"]) for h in fp32["history"]]
    assert weights_bf16.keys() == weights_fp32.keys()
    assert all(torch.equal(weights_bf16[k], weights_fp32[k]) for k in weights_bf16)
    assert all(p.dtype == torch.float32 for p in lm.model.parameters())  # the loaded model is never touched


def test_arms_of_different_precisions_train_one_after_another_in_one_process(tiny_model, tmp_path):
    """accelerate keeps one state per process: an fp32 training after a bf16 one (or the reverse) must not fail."""
    import harness.lm.training as training

    lm = TransformersLM(str(tiny_model))
    task = _keyword_task(tmp_path / "task", n_train=12, n_heldout=2)
    pairs = [(lm.render([{"role": "user", "content": ex.input}]), ex.target) for ex in task.train]
    for i, dtype in enumerate(["fp32", "bf16", "fp32"]):
        cfg = training.TrainConfig.from_settings({**lora_defaults(), **FAST, "dtype": dtype, "epochs": 1,
                                                  "batch_size": 4})
        report = training.train_lora(lm, pairs[:8], pairs[8:], cfg, tmp_path / f"run{i}", seed=0)
        assert report["autocast"] == ("bf16" if dtype == "bf16" else "no")


def test_micro_batches_keep_every_row_once_and_each_part_within_the_budget():
    from harness.lm.train_data import Encoded, micro_batches

    rows = [Encoded(list(range(n)), 2) for n in (5, 9, 3, 12, 7, 7)]
    assert micro_batches(rows, 6 * 12) == [rows]  # fits: the batch as it is, in its order
    parts = micro_batches(rows, 20)
    assert sorted(len(e.ids) for p in parts for e in p) == sorted(len(e.ids) for e in rows)
    assert all(len(p) * max(len(e.ids) for e in p) <= 20 or len(p) == 1 for p in parts)
    assert [len(p) for p in micro_batches(rows, 1)] == [1] * 6  # a row over the budget is a part of its own


def test_a_batch_run_as_micro_batches_trains_the_same_adapter(tiny_model, tmp_path, monkeypatch):
    """max_step_tokens bounds memory only: a batch split into micro-batches (each row alone) must give the losses and
    the adapter of the whole batch, up to the order floats are summed in; the shared prefix runs once per part."""
    import harness.lm.train_loop as train_loop
    import harness.lm.training as training
    from safetensors.torch import load_file

    lm = TransformersLM(str(tiny_model))
    task = _keyword_task(tmp_path / "task", n_train=20, n_heldout=2)
    rng = random.Random(1)  # rows of different lengths, so parts are padded differently from the whole batch
    pairs = [(lm.render([{"role": "system", "content": "Answer with the label."},
                         {"role": "user", "content": ex.input + " ok" * rng.randrange(8)}]), ex.target)
             for ex in task.train]
    calls = []
    real_loss = train_loop.target_loss
    monkeypatch.setattr(train_loop, "target_loss", lambda model, batch, target_only: (
        model.training and calls.append(batch["input_ids"].shape[0]), real_loss(model, batch, target_only))[1])
    runs = {}
    for name, budget in (("whole", 4096), ("rows", 1)):
        cfg = training.TrainConfig.from_settings({**lora_defaults(), **FAST, "dtype": "fp32", "epochs": 2,
                                                  "patience": 3, "batch_size": 4, "max_step_tokens": budget})
        calls.clear()
        report = training.train_lora(lm, pairs[:16], pairs[16:], cfg, tmp_path / name, seed=0)
        runs[name] = (report, load_file(str(tmp_path / name / "adapter_model.safetensors")), list(calls))
    (whole, w_whole, c_whole), (rows, w_rows, c_rows) = runs["whole"], runs["rows"]
    assert set(c_whole) == {4} and set(c_rows) == {1} and len(c_rows) == 4 * len(c_whole)  # training steps split
    assert whole["shared_prefix_tokens"] > 0 and whole["tokens_seen"] == rows["tokens_seen"]
    for a, b in zip(whole["history"], rows["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["dev_loss"] == pytest.approx(b["dev_loss"], rel=1e-5)
    assert w_whole.keys() == w_rows.keys()
    assert all(torch.allclose(w_whole[k], w_rows[k], atol=1e-5, rtol=1e-4) for k in w_whole)

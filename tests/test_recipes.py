"""Task recipes that point at the real data sets in ../shared (skipped with a reason where it is absent), and the
`${data_root}` / HARNESS_DATA_ROOT mechanism that lets the same recipes read a copy elsewhere."""

import json
import re

import pytest
import yaml

from harness.errors import TaskError
from harness.task import load_task
from harness.taskdata import DATA_ROOT_ENV
from tests.conftest import ROOT

SHARED = ROOT.parent / "shared" / "datasets"
TASKS = ROOT / "tasks"
RECIPES = ("banking77", "restaurant8k", "snips", "covid_faq")


def needs(*names):
    missing = [n for n in names if not (SHARED / n).is_dir()]
    return pytest.mark.skipif(bool(missing), reason=f"{SHARED} lacks {', '.join(missing)}: the recipes read "
                                                    f"../shared/datasets beside the repository")


@pytest.fixture(autouse=True)
def _default_data_root(monkeypatch):
    """Recipes must resolve their own default root, whatever the developer's shell has set."""
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)


def _shared_json(name, file):
    return json.loads((SHARED / name / file).read_text(encoding="utf-8"))


@needs("covid_faq")
def test_covid_faq_recipe_reads_the_shared_files_in_place():
    task = load_task(TASKS / "covid_faq")
    assert (len(task.split("knowledge")), len(task.train), len(task.heldout)) == (108, 149, 90)
    knowledge_ids = {d.id for d in task.split("knowledge")}
    assert all(set(ex.meta["doc_ids"]) <= knowledge_ids for ex in task.heldout)
    assert task.split("knowledge")[0].meta["title"]  # the FAQ question travels with its answer
    assert task.files["heldout"].resolve() == (SHARED / "covid_faq" / "test.jsonl").resolve()


@needs("banking77")
def test_banking77_recipe_has_77_intents_with_readable_text():
    task = load_task(TASKS / "banking77", limit_train=20, limit_heldout=20)
    assert task.type == "classification" and task.metric == "accuracy"
    assert task.labels == tuple(_shared_json("banking77", "labels.json"))
    assert len(task.labels) == 77 and set(task.label_text) == set(task.labels)
    texts = [task.text_of(label) for label in task.labels]
    assert len(set(texts)) == 77  # distinct, so an answer maps back to one label
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)*", t) for t in texts), [t for t in texts if "_" in t or "?" in t]
    assert task.text_of("card_arrival") == "card arrival"
    assert task.text_of("Refund_not_showing_up") == "refund not showing up"
    assert task.text_of("reverted_card_payment?") == "reverted card payment"
    assert (len(task.train), len(task.heldout)) == (20, 20)
    # the data's own label_text column agrees (it keeps upstream's stray "?")
    assert all(task.text_of(ex.target) == ex.meta["label_text"].rstrip("?") for ex in task.train + task.heldout)
    assert task.files["train"].resolve() == (SHARED / "banking77" / "train.jsonl").resolve()
    assert "bank" in task.instruction and "intent" in task.instruction


@needs("restaurant8k")
def test_restaurant8k_recipe_extracts_the_five_booking_fields():
    task = load_task(TASKS / "restaurant8k", limit_train=20, limit_heldout=20)
    assert task.type == "extraction" and task.metric == "field_f1" and not task.labels
    assert task.fields == tuple(_shared_json("restaurant8k", "fields.json"))
    assert task.fields == ("people", "date", "time", "first_name", "last_name")
    for ex in task.train + task.heldout:
        assert tuple(ex.target) == task.fields
        assert all(v is None or v in ex.input for v in ex.target.values())  # spans of the message, or null
        assert isinstance(ex.meta["requested_slots"], tuple)
    values = [v for ex in task.train for v in ex.target.values()]
    assert any(v is None for v in values) and any(v is not None for v in values)
    assert task.files["heldout"].resolve() == (SHARED / "restaurant8k" / "test.jsonl").resolve()
    assert "null" in task.instruction and "booking" in task.instruction


@needs("snips")
def test_snips_recipe_classifies_seven_intents():
    task = load_task(TASKS / "snips", limit_train=20, limit_heldout=20)
    assert task.type == "classification"
    assert task.labels == tuple(_shared_json("snips", "labels.json")) and len(task.labels) == 7
    assert task.text_of("SearchScreeningEvent") == "search screening event"
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)*", task.text_of(label)) for label in task.labels)
    assert set(task.label_descriptions) == set(task.labels)
    assert all(ex.meta["fields"] is not None for ex in task.train)  # slots travel as metadata


@needs("snips")
def test_snips_slot_extraction_variant_from_the_readme_loads(tmp_path):
    slots = _shared_json("snips", "fields.json")["all"]
    (tmp_path / "task.yaml").write_text(yaml.safe_dump({
        "name": "snips_slots", "type": "extraction", "instruction": "Fill the slots of the request.",
        "data_root": str(SHARED), "allow_overlap": True, "fields": slots,
        "splits": {"train": "${data_root}/snips/train.jsonl", "heldout": "${data_root}/snips/test.jsonl"},
        "columns": {"id": "id", "input": "text", "target": "fields"}}))
    task = load_task(tmp_path, limit_train=20, limit_heldout=20)
    assert len(task.fields) == 39
    ex = task.heldout[0]
    assert len(ex.target) == 39 and sum(v is not None for v in ex.target.values()) >= 1  # absent slots are null


# Full sizes, and the held-out inputs that upstream's own split shares with train (the loader's overlap check,
# which ignores case and whitespace). The recipes accept them (allow_overlap: true, with a comment); the check
# itself still refuses them when asked to.
@pytest.mark.parametrize("name, n_train, n_heldout, n_overlap", [
    ("banking77", 10003, 3080, 7), ("restaurant8k", 8198, 3731, 177), ("snips", 13784, 700, 11),
    ("covid_faq", 149, 90, 0)])
def test_recipe_sizes_and_upstream_train_test_overlap(name, n_train, n_heldout, n_overlap):
    if not (SHARED / name).is_dir():
        pytest.skip(f"{SHARED / name} is absent: the recipe reads ../shared/datasets beside the repository")
    task = load_task(TASKS / name)
    assert (len(task.train), len(task.heldout), len(task.overlap)) == (n_train, n_heldout, n_overlap)
    if n_overlap:
        with pytest.raises(TaskError, match=rf"test.jsonl:\d+: field 'text': {n_overlap} held-out example\(s\)"):
            load_task(TASKS / name, allow_overlap=False)


def _copy_slice(recipe, root, lines=5):
    """Copy the first lines of every file the recipe names into root, laid out like ../shared/datasets."""
    splits = yaml.safe_load((TASKS / recipe / "task.yaml").read_text())["splits"]
    for rel in splits.values():
        rel = rel.removeprefix("${data_root}/")
        src, dst = SHARED / rel, root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]), encoding="utf-8")
    return splits


@needs(*RECIPES)
@pytest.mark.parametrize("recipe", RECIPES)
def test_env_override_points_a_recipe_at_a_copy(recipe, tmp_path, monkeypatch):
    splits = _copy_slice(recipe, tmp_path / "copy")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_ROOT_ENV, "copy")  # relative to the working directory
    task = load_task(TASKS / recipe, allow_overlap=False)
    assert set(task.files) == set(splits)
    assert all(path.resolve().is_relative_to((tmp_path / "copy").resolve()) for path in task.files.values())
    assert all(len(task.split(split)) == 5 for split in splits)


def test_missing_data_file_names_path_split_and_env_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(TaskError) as e:
        load_task(TASKS / "banking77")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(TASKS / "banking77" / "task.yaml") + ": field 'splits.train': ")
    assert str(tmp_path / "nowhere" / "banking77" / "train.jsonl") in msg
    assert f"from {DATA_ROOT_ENV}" in msg and f"set {DATA_ROOT_ENV} to the folder" in msg


def _task(folder, splits, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.yaml").write_text(yaml.safe_dump({"type": "classification", "instruction": "Classify.",
                                                      "labels": ["a", "b"], "splits": splits, **extra}))
    return folder


def test_data_root_key_is_relative_to_the_task_folder_and_the_env_wins(tmp_path, monkeypatch):
    for root, label in ((tmp_path / "data", "a"), (tmp_path / "mine", "b")):
        root.mkdir()
        for split in ("train", "heldout"):
            (root / f"{split}.jsonl").write_text(json.dumps({"id": split, "input": f"{split} text",
                                                             "target": label}) + "\n")
    folder = _task(tmp_path / "tasks" / "t", {"train": "${data_root}/train.jsonl",
                                              "heldout": "${data_root}/heldout.jsonl"}, data_root="../../data")
    assert load_task(folder).train[0].target == "a"
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "mine"))
    assert load_task(folder).train[0].target == "b"
    monkeypatch.delenv(DATA_ROOT_ENV)
    (tmp_path / "data" / "heldout.jsonl").unlink()
    with pytest.raises(TaskError, match=r"field 'splits.heldout': heldout split file not found: "
                                        + re.escape(f"{tmp_path / 'data' / 'heldout.jsonl'} (${{data_root}} = "
                                                    f"{tmp_path / 'data'}, from data_root in task.yaml; set")):
        load_task(folder)


@pytest.mark.parametrize("train, extra, expected", [
    ("${data_root}/train.jsonl", {}, r"field 'splits.train': .*uses \$\{data_root\} but no data root is set: set "
                                     r"HARNESS_DATA_ROOT or add data_root: to task.yaml"),
    ("${root}/train.jsonl", {"data_root": "."}, r"field 'splits.train': only a leading \$\{data_root\}"),
    ("data/${data_root}/train.jsonl", {"data_root": "."}, r"field 'splits.train': only a leading \$\{data_root\}"),
    ("${data_root}/train.jsonl", {"data_root": 3}, r"field 'data_root': must be a folder path"),
])
def test_bad_data_root_use_is_a_one_line_error(tmp_path, train, extra, expected):
    folder = _task(tmp_path / "t", {"train": train, "heldout": "heldout.jsonl"}, **extra)
    with pytest.raises(TaskError, match=expected):
        load_task(folder)


def test_hr_policy_qa_has_gold_documents_for_every_question():
    task = load_task(ROOT / "tasks" / "hr_policy_qa")
    ids = {d.id for d in task.split("knowledge")}
    assert len(ids) >= 40 and len(task.heldout) >= 120 and len(task.train) >= 150
    assert all(ex.meta["doc_ids"] and set(ex.meta["doc_ids"]) <= ids for ex in task.heldout + task.train)

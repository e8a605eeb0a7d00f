"""Task recipes that point at the real data sets in ../shared (skipped with a reason where it is absent)."""

import pytest

from harness.task import load_task
from tests.conftest import ROOT

SHARED = ROOT.parent / "shared" / "datasets"


@pytest.mark.skipif(not (SHARED / "covid_faq").is_dir(), reason="../shared/datasets/covid_faq is not beside the repo")
def test_covid_faq_recipe_reads_the_shared_files_in_place():
    task = load_task(ROOT / "tasks" / "covid_faq")
    assert (len(task.split("knowledge")), len(task.train), len(task.heldout)) == (108, 149, 90)
    knowledge_ids = {d.id for d in task.split("knowledge")}
    assert all(set(ex.meta["doc_ids"]) <= knowledge_ids for ex in task.heldout)
    assert task.split("knowledge")[0].meta["title"]  # the FAQ question travels with its answer
    assert task.files["heldout"].resolve() == (SHARED / "covid_faq" / "test.jsonl").resolve()


def test_hr_policy_qa_has_gold_documents_for_every_question():
    task = load_task(ROOT / "tasks" / "hr_policy_qa")
    ids = {d.id for d in task.split("knowledge")}
    assert len(ids) >= 40 and len(task.heldout) >= 120 and len(task.train) >= 150
    assert all(ex.meta["doc_ids"] and set(ex.meta["doc_ids"]) <= ids for ex in task.heldout + task.train)

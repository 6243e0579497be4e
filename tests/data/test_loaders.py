"""Each loader on small files in the shared-data formats: parsing, options, malformed rows, sources."""

from __future__ import annotations

import json
import re

import pytest

from surefast.data import IDK, LETTERS, NOTA, TASKS, TaskConfig, load_task
from surefast.data.halueval import same_text
from surefast.errors import SurefastError

from .fixtures import (
    cosmosqa_csv,
    data_folder,
    dialogue_rows,
    hellaswag_text,
    jsonl,
    mmlu_rows,
    summary_rows,
    write,
)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SUREFAST_DATA", raising=False)
    return data_folder(tmp_path / "data")


def original(item):
    """The content option the label points at, in source order (meta["order"] records the shuffle)."""
    order = [int(p) for p in item.meta["order"].split(",")]
    return order[item.label]


@pytest.mark.parametrize("task", TASKS)
def test_every_task_loads_from_a_data_folder(folder, task):
    data = load_task(task, TaskConfig(n=4, source=str(folder)))
    assert len(data.items) == 4 and data.source.startswith(str(folder.resolve()))
    assert data.source_kind == "file" and len(data.source_identity["sha256"]) == 64
    for item in [*data.items, *data.demos]:
        assert item.task == task and item.options[4:] == (IDK, NOTA) and 0 <= item.label < 4
        assert sorted(int(p) for p in item.meta["order"].split(",")) == [0, 1, 2, 3]
    assert not {d.uid for d in data.demos} & {i.uid for i in data.items}
    assert json.loads(json.dumps(data.record()))["fingerprint"] == data.fingerprint


def test_mmlu_options_labels_subjects_and_junk(folder):
    data = load_task("mmlu", TaskConfig(n=7, source=str(folder)))
    assert data.stats.rows_read == 13 and data.stats.junk_dropped == 1 and data.stats.available == 12
    assert len(data.demos) == 5
    for item in [*data.items, *data.demos]:
        i = int(item.uid.split("-")[1])
        assert item.context == "" and item.question == f"Question number {i}?"
        assert item.options[item.label] == f"{'abcd'[i % 4]}{i}"  # correct_answer "ABCD"[i % 4]
        assert original(item) == i % 4
        assert item.meta["subject"] in ("anatomy", "virology", "college mathematics")


def test_cosmosqa_csv_with_multiline_context_and_own_nota(folder):
    data = load_task("cosmosqa", TaskConfig(n=None, source=str(folder / "cosmosqa" / "valid.csv")))
    every = {it.uid: it for it in [*data.items, *data.demos]}
    assert len(every) == 10 and len(data.items) == 5
    one = every["cosmosqa-1"]
    assert one.context == "Passage 1, with a comma.\nAnd a second line." and one.meta["id"] == "id1"
    assert one.options[one.label] == "x1"
    three = every["cosmosqa-3"]  # label 3: the dataset's own "None of the above choices ."
    assert three.options[three.label] == "None of the above choices ."
    assert three.meta["nota_option"] == LETTERS[three.label]


def test_hellaswag_six_line_blocks(folder):
    data = load_task("hellaswag", TaskConfig(n=5, source=str(folder)))
    for item in [*data.items, *data.demos]:
        i = int(item.uid.split("-")[1])
        assert item.context == f"Activity {i}: Someone does thing {i}. they"
        assert item.options[item.label] == f"ending {i}.{i % 4}"
        assert "continuation" in item.question


@pytest.mark.parametrize("task", ["halu_dialogue", "halu_summarization"])
def test_halueval_right_hallucinated_and_two_distractors(folder, task):
    data = load_task(task, TaskConfig(n=None, source=str(folder)))
    assert len(data.demos) == (3 if task == "halu_dialogue" else 1)
    demo_uids = {d.uid for d in data.demos}
    for item in [*data.items, *data.demos]:
        i = int(item.uid.split("-")[1])
        right, wrong = (f"Right {i}.", f"Wrong {i}.") if task == "halu_dialogue" else (f"Summary {i}.", f"Made up {i}.")
        assert item.options[item.label] == right
        assert item.options[LETTERS.index(item.meta["hallucinated"])] == wrong
        sources = item.meta["distractors"].split(",")
        assert len(sources) == 2 and item.uid not in sources and not demo_uids & set(sources)
        distractors = [o for k, o in enumerate(item.options[:4]) if o not in (right, wrong)]
        assert len(distractors) == 2 and len(set(item.options[:4])) == 4
    if task == "halu_dialogue":
        assert (
            data.items[0].context.startswith("Knowledge: Fact ")
            and "\nDialogue history: [Human]" in data.items[0].context
        )


def test_distractors_never_repeat_the_items_own_answers(tmp_path):
    rows = dialogue_rows(8)
    for row in rows[1:6]:  # most other records share item 0's right answer or its hallucinated one
        row["right_response"] = "  right 0. " if row is rows[1] else "Wrong 0."
    path = write(tmp_path / "dialogue.jsonl", jsonl(rows))
    data = load_task("halu_dialogue", TaskConfig(n=None, n_demos=0, source=str(path)))
    for item in data.items:
        for k, text in enumerate(item.options[:4]):
            others = [t for j, t in enumerate(item.options[:4]) if j != k]
            assert not any(same_text(text, t) for t in others), item


def test_demo_answers_rotate_over_a_to_d(folder):
    data = load_task("mmlu", TaskConfig(n=3, n_demos=5, source=str(folder)))
    assert [d.label for d in data.demos] == [0, 1, 2, 3, 0]


def test_sampling_is_deterministic_nested_and_seeded(folder):
    def load(**kw):
        return load_task("hellaswag", TaskConfig(source=str(folder), **kw))

    a, b = load(n=5, seed=0), load(n=5, seed=0)
    assert a.items == b.items and a.fingerprint == b.fingerprint and a.demos == b.demos
    small = load(n=2, seed=0)
    assert small.items == a.items[:2] and small.demos == a.demos  # nested: N=2 is a prefix of N=5
    other = load(n=5, seed=1)
    assert other.demos == a.demos  # demos do not depend on the seed
    assert [i.uid for i in other.items] != [i.uid for i in a.items] or [i.options for i in other.items] != [
        i.options for i in a.items
    ]
    assert other.fingerprint != a.fingerprint


def test_n_too_large_and_all(folder):
    with pytest.raises(SurefastError, match=r"asked for n=50 mmlu items, but .* has 7 after 5 demos") as info:
        load_task("mmlu", TaskConfig(n=50, source=str(folder)))
    assert "--n 7" in str(info.value)
    assert len(load_task("mmlu", TaskConfig(n=None, source=str(folder))).items) == 7


# --- malformed rows: an error naming file and line, or skipped and counted ---------------------------------

MALFORMED = [
    ("mmlu.jsonl", lambda: jsonl([*mmlu_rows(3), "{not json", *mmlu_rows(2)]), "mmlu", 4, "invalid JSON"),
    (
        "mmlu.jsonl.gz",
        lambda: jsonl([*mmlu_rows(2), {**mmlu_rows(1)[0], "correct_answer": "G"}]),
        "mmlu",
        3,
        "label 'correct_answer' is 'G'",
    ),
    ("mmlu.jsonl", lambda: jsonl([*mmlu_rows(4), {"question": "q"}]), "mmlu", 5, "missing field 'answer_a'"),
    (
        "mmlu.jsonl",
        lambda: jsonl([*mmlu_rows(4), {**mmlu_rows(1)[0], "answer_c": "  "}]),
        "mmlu",
        5,
        "field 'answer_c' is empty",
    ),
    (
        "valid.csv",
        lambda: cosmosqa_csv(3, extra=[["id9", "ctx", "q", "a", "b", "c", "d", "7"]]),
        "cosmosqa",
        6,
        "label 'label' is 7",
    ),  # the second record spans lines 3-4: the bad one starts at line 6
    (
        "valid.csv",
        lambda: cosmosqa_csv(3, extra=[["id9", "ctx", "q", "a"]]),
        "cosmosqa",
        6,
        "4 columns, the header has 8",
    ),
    ("hs.txt", lambda: hellaswag_text(3, labels=["0", "x", "2"]), "hellaswag", 7, "label 'label' is 'x'"),
    (
        "hs.txt.bz2",
        lambda: hellaswag_text(2) + "Ctx: truncated\n1\nonly one ending\n",
        "hellaswag",
        13,
        "truncated item: 3 of 6 lines",
    ),
    (
        "dialogue.jsonl",
        lambda: jsonl([*dialogue_rows(4), {**dialogue_rows(1)[0], "hallucinated_response": "right 0."}]),
        "halu_dialogue",
        5,
        "the right and the hallucinated answer are the same text",
    ),
    (
        "summarization.jsonl",
        lambda: jsonl([*summary_rows(4), ["a", "list"]]),
        "halu_summarization",
        5,
        "expected a JSON object",
    ),
]


@pytest.mark.parametrize(("name", "make", "task", "line", "reason"), MALFORMED)
def test_malformed_row_names_file_and_line(tmp_path, name, make, task, line, reason):
    path = write(tmp_path / name, make())
    with pytest.raises(SurefastError) as info:
        load_task(task, TaskConfig(n=1, n_demos=0, source=str(path)))
    message = str(info.value)
    assert f"{path.resolve()}:{line}: " in message and reason in message, message
    assert "skip_malformed" in message and "\n" not in message


@pytest.mark.parametrize(("name", "make", "task", "line", "reason"), MALFORMED)
def test_skip_malformed_skips_and_counts(tmp_path, name, make, task, line, reason):
    path = write(tmp_path / name, make())
    data = load_task(task, TaskConfig(n=1, n_demos=0, source=str(path), skip_malformed=True))
    assert data.stats.malformed_skipped == 1
    assert data.stats.available == data.stats.rows_read - 1
    assert data.stats.malformed_examples[0].startswith(f"{path.resolve()}:{line}: ")


def test_not_utf8_is_one_malformed_line(tmp_path):
    good = jsonl(mmlu_rows(3)).encode()
    path = tmp_path / "mmlu.jsonl"
    path.write_bytes(good + b'{"question": "caf\xe9"}\n')
    with pytest.raises(SurefastError, match=r"mmlu\.jsonl:4: not UTF-8"):
        load_task("mmlu", TaskConfig(n=1, n_demos=0, source=str(path)))


def test_corrupt_archive_is_named(tmp_path):
    path = tmp_path / "mmlu_test.jsonl.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(SurefastError, match=r"cannot read .*mmlu_test\.jsonl\.gz"):
        load_task("mmlu", TaskConfig(n=1, source=str(path)))


# --- sources --------------------------------------------------------------------------------------------


def test_missing_source_says_how_to_give_one(monkeypatch, tmp_path):
    monkeypatch.delenv("SUREFAST_DATA", raising=False)
    with pytest.raises(SurefastError) as info:
        load_task("cosmosqa", TaskConfig(n=1))
    text = str(info.value)
    assert "no data source for task cosmosqa" in text and "--source PATH" in text and "hf:allenai/cosmos_qa" in text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        ("no/such/file.csv", r"no such file or folder: no/such/file\.csv"),
        ("allenai/cosmos_qa", r"for a hub dataset write hf:allenai/cosmos_qa"),
        ("hf:not a repo", r"bad hub dataset id"),
        ("pypi", r"task cosmosqa has no PyPI package"),
    ],
)
def test_bad_sources_are_one_line_errors(source, pattern):
    with pytest.raises(SurefastError, match=pattern):
        load_task("cosmosqa", TaskConfig(n=1, source=source))


def test_folder_without_the_task_and_unknown_format(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SurefastError, match=r"no hellaswag file in .*empty \(looked for hellaswag/hellaswag_val_full"):
        load_task("hellaswag", TaskConfig(n=1, source=str(tmp_path / "empty")))
    odd = write(tmp_path / "data.xml", "<x/>")
    with pytest.raises(SurefastError, match="cannot tell the format"):
        load_task("mmlu", TaskConfig(n=1, source=str(odd)))


def test_unknown_task_suggests():
    with pytest.raises(SurefastError, match="did you mean 'hellaswag'"):
        load_task("helaswag")


def test_surefast_data_env_folder_is_used(folder, monkeypatch):
    monkeypatch.setenv("SUREFAST_DATA", str(folder))
    data = load_task("cosmosqa", TaskConfig(n=2))
    assert data.source == str((folder / "cosmosqa" / "valid.csv").resolve())


def test_same_content_same_fingerprint_whatever_the_container(tmp_path):
    text = jsonl(mmlu_rows(12))
    plain = load_task("mmlu", TaskConfig(n=4, source=str(write(tmp_path / "a" / "mmlu.jsonl", text))))
    packed = load_task("mmlu", TaskConfig(n=4, source=str(write(tmp_path / "b" / "mmlu_test.jsonl.bz2", text))))
    assert plain.fingerprint == packed.fingerprint and plain.items == packed.items
    assert plain.source_identity != packed.source_identity


def test_json_array_and_parquet_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = summary_rows(6)
    array = write(tmp_path / "summarization_data.json", json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "summ.parquet")
    a = load_task("halu_summarization", TaskConfig(n=3, source=str(array)))
    b = load_task("halu_summarization", TaskConfig(n=3, source=str(tmp_path / "summ.parquet")))
    assert a.items == b.items


def test_uids_stay_put_when_bad_rows_are_skipped(tmp_path):
    path = write(tmp_path / "mmlu.jsonl", jsonl([*mmlu_rows(2), "{broken", *mmlu_rows(8)[2:]]))
    data = load_task("mmlu", TaskConfig(n=None, n_demos=0, source=str(path), skip_malformed=True))
    assert sorted(int(it.uid.split("-")[1]) for it in data.items) == [0, 1, 3, 4, 5, 6, 7, 8]
    assert all(re.fullmatch(r"mmlu-\d+", it.uid) for it in data.items)

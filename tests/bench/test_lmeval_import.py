"""``surefast bench import-lmeval``: lm-evaluation-harness per-sample logs as a surefast run.

End to end on the files a real ``lm_eval --log_samples`` run writes (a tiny random model, local
JSON tasks, offline), goldens on hand-written logs, and malformed logs refused in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from surefast.bench.lmeval_import import ImportConfig, import_lmeval, read_lmeval
from surefast.bench.store import Store
from surefast.errors import SurefastError

DATE = "2026-01-02T03-04-05.678901"

# Three lm-eval tasks: a group of two 4-option tasks, a 6-option task, and one that generates.
TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""
GENERATE = """task: tinygen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{choices[0]}}}}"
generation_kwargs:
  max_gen_toks: 2
  until: ["\\n"]
metric_list:
  - metric: exact_match
"""
GROUP = """group: tinymc
task: [tinymc_alpha, tinymc_beta]
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
"""


def _write_tasks(root: Path) -> Path:
    words = ["red", "green", "blue", "cyan", "magenta", "yellow"]
    data, tasks = root / "data", root / "tasks"
    data.mkdir()
    tasks.mkdir()
    files = {
        "tinymc_alpha": [{"question": f"Alpha {i}?", "choices": words[:4], "answer": i % 4} for i in range(12)],
        "tinymc_beta": [{"question": f"Beta {i}?", "choices": words[1:5], "answer": (i + 1) % 4} for i in range(12)],
        "tinysix": [
            {"question": f"Six {i}?", "choices": words, "answer": i % 6, "subject": "colours"} for i in range(24)
        ],
    }
    for name, rows in files.items():
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tasks / f"{name}.yaml").write_text(TASK.format(name=name, data=data / f"{name}.jsonl"))
    (tasks / "tinygen.yaml").write_text(GENERATE.format(data=data / "tinysix.jsonl"))
    (tasks / "tinymc.yaml").write_text(GROUP)
    return tasks


@pytest.fixture(scope="module")
def lmeval_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``lm_eval --log_samples --output_path OUT`` writes for a tiny random llama."""
    pytest.importorskip("lm_eval")
    from surefast.models.tiny import tiny_model, tiny_tokenizer

    root = tmp_path_factory.mktemp("lmeval")
    model = root / "tiny-llama"
    tiny_model("llama", 0).save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    tasks = _write_tasks(root)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(root / "hf"),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    args = ["--model", "hf", "--model_args", f"pretrained={model},dtype=float32", "--device", "cpu"]
    args += ["--tasks", "tinymc,tinysix,tinygen", "--include_path", str(tasks), "--batch_size", "8"]
    args += ["--log_samples", "--output_path", str(root / "out")]
    done = subprocess.run([sys.executable, "-m", "lm_eval", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "out"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_real_lm_eval_run_imports_and_reports(lmeval_out: Path, tmp_path: Path, cli: Any) -> None:
    from surefast.bench.report.build import build_report
    from surefast.bench.runner import summary
    from surefast.conformal import split_indices

    store_dir = tmp_path / "store"
    out = cli("bench", "import-lmeval", str(lmeval_out), "--store", str(store_dir), "--splits", "20")
    assert out.returncode == 0, out.stderr
    assert "tinygen: skipped (generate_until" in out.stdout
    assert "tinymc: 24 items, K=4" in out.stdout and "tinysix: 24 items, K=6" in out.stdout

    store = Store(store_dir)
    (run_id,) = store.runs()
    meta = store.run(run_id).read_meta()
    assert meta["kind"] == "lmeval-import" and meta["model"] == "tiny-llama" and meta["status"] == "done"
    assert meta["lm_eval_version"] and meta["model_args"]["pretrained"].endswith("tiny-llama")
    (folder,) = lmeval_out.iterdir()
    (results_file,) = folder.glob("results_*.json")
    results = json.loads(results_file.read_text())
    items = store.items([run_id]).to_pylist()
    rows = store.query("SELECT * FROM results WHERE resampling = 'splits'", runs=[run_id]).fetchall()
    cols = [d[0] for d in store.query("SELECT * FROM results LIMIT 0", runs=[run_id]).description]
    rows = [dict(zip(cols, r, strict=True)) for r in rows]

    for task, leaves, k, acc in (
        ("tinymc", ("tinymc_alpha", "tinymc_beta"), 4, results["groups"]["tinymc"]["acc,none"]),
        ("tinysix", ("tinysix",), 6, results["results"]["tinysix"]["acc,none"]),
    ):
        logged = {f"{leaf}:{s['doc_id']}": s for leaf in leaves for s in _lines(next(folder.glob(f"samples_{leaf}_*")))}
        mine = [i for i in items if i["task"] == task]  # in the unit's order
        assert len(mine) == len(logged) == 24
        for item in mine:
            sample, leaf = logged[item["uid"]], item["uid"].partition(":")[0]
            lls = [float(r[0]) for r in sample["filtered_resps"]]
            np.testing.assert_allclose(item["logits"], lls, rtol=1e-6)  # stored as float32
            assert item["label"] == int(sample["target"]) and len(item["logits"]) == k
            assert float(np.argmax(item["logits"]) == item["label"]) == sample["acc"]
            assert item["group"] == (leaf.removeprefix("tinymc_") if len(leaves) > 1 else "colours")
            assert item["text"] == sample["doc"]["question"]
        # Every split's accuracy is lm-eval's acc over that split's test items.
        acc_vec = np.array([logged[i["uid"]]["acc"] for i in mine])
        assert acc_vec.mean() == pytest.approx(acc)
        _, test = split_indices(24, 20, 0.5, 0)
        unit = [r for r in rows if r["task"] == task and r["score_fn"] == "lac" and r["metric"] == "accuracy"]
        got = np.array([r["value"] for r in sorted(unit, key=lambda r: r["split"])])
        np.testing.assert_allclose(got, acc_vec[test].mean(axis=1))
        metrics = {r["metric"] for r in rows if r["task"] == task}
        assert f"set_size_hist_{k}" in metrics and f"set_size_hist_{k + 1}" not in metrics
        sizes = [r["value"] for r in rows if r["task"] == task and r["metric"] == "mean_set_size"]
        assert max(sizes) <= k
        assert not metrics & {"e_share", "f_share"}  # lm-eval's options E and F are no "I don't know"

    table = summary(store, run_id)
    assert {r["task"] for r in table} == {"tinymc", "tinysix", "avg"}
    page = build_report(store, [run_id], tmp_path / "report")
    assert page.is_file() and "tinysix" in page.read_text()


def test_a_compressed_import_pairs_with_the_dense_one(lmeval_out: Path, tmp_path: Path) -> None:
    """Same items, same settings: the protocols match, whatever the model (lm-eval's item hashes)."""
    store = Store(tmp_path / "store")
    config = ImportConfig(n_splits=5, n_boot=0)
    dense, _ = import_lmeval(read_lmeval(lmeval_out), store, config)
    parsed = read_lmeval(lmeval_out, model="tiny-llama")
    squeezed, _ = import_lmeval(parsed, store, ImportConfig(n_splits=5, n_boot=0, compression="rtn-4"))
    rows = store.query("SELECT DISTINCT run_id, compression, task, protocol FROM results ORDER BY ALL").fetchall()
    assert {(c, t) for _, c, t, _ in rows} == {
        ("", "tinymc"),
        ("", "tinysix"),
        ("rtn-4", "tinymc"),
        ("rtn-4", "tinysix"),
    }
    by_task: dict[str, set[str]] = {}
    for _, _, task, fp in rows:
        by_task.setdefault(task, set()).add(fp)
    assert all(len(fps) == 1 for fps in by_task.values()) and dense.run_id != squeezed.run_id


# Hand-written logs in lm-eval 0.4.13's exact layout (numbers as strings, as its writer leaves them).


def _sample(doc_id: int, lls: list[float], target: str, options: list[str], **extra: Any) -> str:
    context = extra.pop("contexts", None) or [f"Q{doc_id}?\nAnswer:"] * len(options)
    return json.dumps(
        {
            "doc_id": doc_id,
            "doc": {"question": f"Q{doc_id}?", "subject": "toy"},
            "target": target,
            "arguments": {
                f"gen_args_{i}": {"arg_0": c, "arg_1": f" {o}"}
                for i, (c, o) in enumerate(zip(context, options, strict=True))
            },
            "resps": [[[str(v), "False"]] for v in lls],
            "filtered_resps": [[str(v), "False"] for v in lls],
            "filter": "none",
            "metrics": ["acc"],
            "doc_hash": f"d{doc_id}",
            "prompt_hash": f"p{doc_id}",
            "target_hash": f"t{target}",
            **extra,
        }
    )


def _write_run(folder: Path, samples: dict[str, list[str]], configs: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    results = {
        "results": {},
        "group_subtasks": {},
        "configs": configs or {t: {"output_type": "multiple_choice", "target_delimiter": " "} for t in samples},
        "versions": {t: 1.0 for t in samples},
        "config": {"model": "hf", "model_args": "pretrained=org/toy-1b,dtype=float32"},
        "lm_eval_version": "0.4.13",
    }
    (folder / f"results_{DATE}.json").write_text(json.dumps(results))
    for task, lines in samples.items():
        (folder / f"samples_{task}_{DATE}.jsonl").write_text("".join(line + "\n" for line in lines))
    return folder


COLOURS = ["red", "blue", "green", "cyan"]
GOLDEN = [
    _sample(0, [-1.0, -2.0, -3.0, -4.0], "0", COLOURS, acc=1.0),  # an index; right
    _sample(1, [-5.0, -1.0, -2.0, -3.0], "2", COLOURS, acc=0.0),  # an index; wrong (argmax 1)
    _sample(2, [-3.0, -0.5, -2.0, -4.0], "blue", COLOURS, acc=1.0),  # an option's text; right
    _sample(1, [-5.0, -1.0, -2.0, -3.0], "2", COLOURS, acc=0.0),  # doc 1 again, equal: dropped
]


def test_golden_hand_written_samples(tmp_path: Path) -> None:
    parsed = read_lmeval(_write_run(tmp_path / "run", {"toy": GOLDEN}))
    assert parsed.model == "org/toy-1b" and parsed.backend == "hf" and parsed.lm_eval_version == "0.4.13"
    (unit,) = parsed.units
    assert unit.task == "toy" and unit.k == 4 and unit.leaves[0].repeats == 1
    assert unit.uids() == ["toy:0", "toy:1", "toy:2"] and unit.groups() == ["toy"] * 3
    np.testing.assert_array_equal(unit.labels(), [0, 2, 1])
    np.testing.assert_array_equal(unit.logits(), [[-1, -2, -3, -4], [-5, -1, -2, -3], [-3, -0.5, -2, -4]])
    np.testing.assert_allclose(unit.logits(normalize=True)[2], [-1.0, -0.125, -0.4, -1.0])  # / len(option)
    assert unit.lm_eval_acc() == pytest.approx(2 / 3) and unit.samples[2].text == "Q2?"

    store = Store(tmp_path / "store")
    run, (done,) = import_lmeval(parsed, store, ImportConfig(alphas=(0.5,), n_splits=4, n_boot=0), run_id="toy-run")
    assert run.run_id == "toy-run" and done.n_items == 3 and done.k == 4
    assert done.accuracy == pytest.approx(2 / 3) and done.lm_eval_acc == pytest.approx(2 / 3)
    items = store.items(["toy-run"]).to_pylist()
    assert [(i["uid"], i["label"], i["strategy"]) for i in items] == [
        ("toy:0", 0, "lmeval"),
        ("toy:1", 2, "lmeval"),
        ("toy:2", 1, "lmeval"),
    ]
    assert len({i["protocol"] for i in items}) == 1 and items[0]["protocol"]
    model_fp = store.query("SELECT DISTINCT model_fp FROM results").fetchall()
    assert model_fp == [(parsed.model_fp,)] and len(parsed.model_fp) == 16


def test_two_option_items_whose_target_is_no_option_take_their_label_from_acc(tmp_path: Path) -> None:
    """winogrande: the options sit in the contexts, the target is the shared continuation."""
    contexts = ["The cat sat because", "The dog sat because"]
    lines = [
        _sample(0, [-1.0, -2.0], "it was tired", ["it was tired"] * 2, contexts=contexts, acc=0.0),
        _sample(1, [-1.0, -2.0], "it was tired", ["it was tired"] * 2, contexts=contexts, acc=1.0),
    ]
    (unit,) = read_lmeval(_write_run(tmp_path, {"wino": lines})).units
    np.testing.assert_array_equal(unit.labels(), [1, 0])


def test_tasks_that_are_not_single_answer_multiple_choice_are_skipped_with_a_note(tmp_path: Path) -> None:
    several = _sample(0, [-1.0, -2.0], "[0, 1]", ["a", "b"])
    contexts = ["A because", "B because", "C because"]
    wide = _sample(0, [-1.0, -2.0, -3.0], "so", ["so"] * 3, contexts=contexts, acc=0.0)  # label unknowable
    configs = {
        "toy": {"output_type": "multiple_choice"},
        "gen": {"output_type": "generate_until"},
        "multi": {"output_type": "multiple_choice"},
        "lost": {"output_type": "multiple_choice"},
        "wide": {"output_type": "multiple_choice"},
    }
    parsed = read_lmeval(
        _write_run(tmp_path, {"toy": GOLDEN, "gen": ["{}"], "multi": [several], "wide": [wide]}, configs)
    )
    assert [u.task for u in parsed.units] == ["toy"]
    assert sorted(parsed.notes) == [
        "gen: skipped (generate_until; only multiple-choice tasks are imported)",
        "lost: no samples file, not imported",
        "multi: skipped (several right answers per item; a conformal label is one option)",
        "wide: skipped (the options sit in the contexts and the target names none of them (known only for 2 options))",
    ]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"doc_id": 2, "doc": ', "not JSON"),
        (_sample(2, [-1.0, -2.0, -3.0], "0", COLOURS[:3]), "3 options, but earlier lines of toy have 4"),
        (_sample(2, [-1.0, -2.0, -3.0, -4.0], "7", COLOURS), "target '7' is out of range for 4 options"),
        (_sample(2, [-1.0, -2.0, -3.0, -4.0], "purple", COLOURS), "neither an option's index nor an option's text"),
        (_sample(2, [-1.0, -2.0, -3.0, -4.0], "1", COLOURS, acc=1.0), "disagrees with lm-eval's own acc"),
        (_sample(1, [-1.0, -2.0, -3.0, -4.0], "1", COLOURS), "doc_id 1 again (first on line 2)"),
        (
            _sample(2, [-1.0, -2.0, -3.0, -4.0], "0", COLOURS, filtered_resps=[["x", "False"]] * 4),
            "'x' is not a finite",
        ),
        (
            _sample(2, [-1.0, -2.0, -3.0, -4.0], "0", COLOURS, filtered_resps=[["-1", "False"]]),
            "1 log-likelihoods for 4",
        ),
    ],
)
def test_a_malformed_line_is_one_error_naming_file_and_line(tmp_path: Path, bad: str, message: str) -> None:
    _write_run(tmp_path, {"toy": [*GOLDEN[:2], bad]})
    with pytest.raises(SurefastError) as info:
        read_lmeval(tmp_path)
    text = info.value.message
    assert f"samples_toy_{DATE}.jsonl line 3: " in text and message in text and "\n" not in text


def test_the_cli_prints_a_broken_log_without_traceback(tmp_path: Path, cli: Any) -> None:
    _write_run(tmp_path / "run", {"toy": [*GOLDEN[:2], "not json at all"]})
    out = cli("bench", "import-lmeval", str(tmp_path / "run"), "--store", str(tmp_path / "store"))
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    assert out.stderr.startswith("error:") and "line 3: not JSON" in out.stderr
    assert not (tmp_path / "store").exists()  # nothing half-imported


def test_too_few_items_or_several_runs_are_refused_before_a_run_exists(tmp_path: Path) -> None:
    parsed = read_lmeval(_write_run(tmp_path / "run", {"toy": GOLDEN}))
    with pytest.raises(SurefastError, match="toy: 3 items leave 1 for calibration"):
        import_lmeval(parsed, Store(tmp_path / "store"), ImportConfig())
    assert not (tmp_path / "store").exists()
    (tmp_path / "run" / "results_2026-02-02T00-00-00.0.json").write_text("{}")
    with pytest.raises(SurefastError, match="holds 2 lm-eval runs"):
        read_lmeval(tmp_path / "run")

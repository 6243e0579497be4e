"""Small task files in the formats of the shared data README, written into a test's folder."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any


def write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, compressed by its suffix (.gz, .bz2 or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".bz2":
        data = bz2.compress(data)
    path.write_bytes(data)
    return path


def jsonl(rows: list[Any]) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def mmlu_rows(n: int = 12) -> list[dict[str, str]]:
    subjects = ["anatomy", "virology", "college mathematics"]
    return [
        {
            "question": f"Question number {i}?",
            "answer_a": f"a{i}",
            "answer_b": f"b{i}",
            "answer_c": f"c{i}",
            "answer_d": f"d{i}",
            "correct_answer": "ABCD"[i % 4],
            "topic": subjects[i % 3],
        }
        for i in range(n)
    ]


MMLU_JUNK = {
    "question": "question",
    "answer_a": "answer_a",
    "answer_b": "answer_b",
    "answer_c": "answer_c",
    "answer_d": "answer_d",
    "correct_answer": "answer",
    "topic": "elementary mathematics",
}


def cosmosqa_csv(n: int = 10, extra: list[list[str]] | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "context", "question", "answer0", "answer1", "answer2", "answer3", "label"])
    for i in range(n):
        context = f"Passage {i}, with a comma.\nAnd a second line." if i == 1 else f"Passage {i}."
        writer.writerow(
            [f"id{i}", context, f"Why {i}?", f"w{i}", f"x{i}", f"y{i}", "None of the above choices .", str(i % 4)]
        )
    for row in extra or []:
        writer.writerow(row)
    return out.getvalue()


def hellaswag_text(n: int = 10, labels: list[str] | None = None) -> str:
    lines = []
    for i in range(n):
        label = labels[i] if labels else str(i % 4)
        lines += [f"Activity {i}: Someone does thing {i}. they", label] + [f"ending {i}.{k}" for k in range(4)]
    return "\n".join(lines) + "\n"


def dialogue_rows(n: int = 10) -> list[dict[str, str]]:
    return [
        {
            "knowledge": f"Fact {i}.",
            "dialogue_history": f"[Human]: Hi {i}? [Assistant]: Hello.",
            "right_response": f"Right {i}.",
            "hallucinated_response": f"Wrong {i}.",
        }
        for i in range(n)
    ]


def summary_rows(n: int = 10) -> list[dict[str, str]]:
    return [
        {
            "document": f"Document {i} " + "word " * (i + 1),
            "right_summary": f"Summary {i}.",
            "hallucinated_summary": f"Made up {i}.",
        }
        for i in range(n)
    ]


def data_folder(root: Path) -> Path:
    """A data folder in the shared layout, every task present (small), compressed like the real one."""
    write(root / "mmlu" / "mmlu_test.jsonl.gz", jsonl([*mmlu_rows(12), MMLU_JUNK]))
    write(root / "cosmosqa" / "valid.csv", cosmosqa_csv(10))
    write(root / "hellaswag" / "hellaswag_val_full.txt.bz2", hellaswag_text(10))
    write(root / "halueval" / "dialogue.jsonl.gz", jsonl(dialogue_rows(10)))
    write(root / "halueval" / "summarization.jsonl.gz", jsonl(summary_rows(10)))
    return root

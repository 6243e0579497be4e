"""Prompt strategies: layout, shared prefix, chat vs plain, zero-shot, and clean tokenization boundaries."""

from __future__ import annotations

import pytest

from data.fixtures import data_folder
from surefast.data import LETTERS, TASKS, TaskConfig, load_task
from surefast.errors import SurefastError
from surefast.prompts import STRATEGIES, PromptConfig, build_prompt, render_for_display, texts
from surefast.prompts.build import boundary_ok, choose_cut

MODES = [(s, shots, chat) for s in STRATEGIES for shots in (None, 0) for chat in (False, True)]


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """Items and demos of every task, from small files in the shared formats."""
    root = data_folder(tmp_path_factory.mktemp("data"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUREFAST_HOME", str(tmp_path_factory.mktemp("home")))
        return {t: load_task(t, TaskConfig(n=4, source=str(root))) for t in TASKS}


def ids(tokenizer, text):
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def assert_clean_split(tokenizer, prompt, items):
    """Tokenizing prefix and rest apart gives the ids of the whole, and the next token is a letter."""
    prefix_ids = ids(tokenizer, prompt.prefix)
    for item in items:
        rest = prompt.render(item)
        assert prefix_ids + ids(tokenizer, rest) == ids(tokenizer, prompt.full(item)), (prompt.config, item.uid)
    full = min((prompt.full(item) for item in items), key=len)
    whole = ids(tokenizer, full)
    for letter in LETTERS:  # " A" continues the prompt as one token: the answer position is the last one
        one = ids(tokenizer, " " + letter)
        assert len(one) == 1 and ids(tokenizer, full + " " + letter) == whole + one


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize(("strategy", "shots", "chat"), MODES)
def test_every_strategy_renders_with_one_shared_prefix(tasks, tiny_tok, task, strategy, shots, chat):
    data = tasks[task]
    prompt = build_prompt(task, data.demos, tiny_tok, PromptConfig(strategy=strategy, n_shots=shots, chat=chat))
    assert prompt.chat is chat
    assert prompt.prefix == "" or prompt.prefix.endswith("\n")
    for item in data.items:
        full = prompt.full(item)
        assert full == prompt.prefix + prompt.render(item) and full.endswith("Answer:")
        own = item.context or item.question  # the item's own text is in its rest, never in the prefix
        assert own in prompt.render(item) and own not in prompt.prefix
        choices = "\nChoices:\n" + "\n".join(f"{letter}. {o}" for letter, o in zip(LETTERS, item.options, strict=True))
        assert choices in prompt.render(item)
        assert not prompt.render(item)[:1].isspace()
    used = data.demos if shots is None else []
    assert prompt.demo_uids == tuple(d.uid for d in used)
    for demo in used:
        assert f"Question: {demo.question}" in prompt.prefix
    assert prompt.prefix.count("Answer: ") == len(used)
    if strategy == "shared":
        assert (texts.SHARED_FEW if used else texts.SHARED_ZERO) in prompt.prefix
    elif strategy == "task":
        assert (texts.TASK_FEW[task] if used else texts.TASK_ZERO[task]) in prompt.prefix
    if used and strategy != "base":
        assert texts.NOW in prompt.full(data.items[0])
    if chat:
        assert prompt.full(data.items[0]).startswith("<|im_start|>user\n")
        assert prompt.render(data.items[0]).endswith("<|im_end|>\n<|im_start|>assistant\nAnswer:")
    else:
        assert "<|im_start|>" not in prompt.full(data.items[0])
    assert_clean_split(tiny_tok, prompt, data.items)


def test_reference_layout_plain_base_few_shot(tasks):
    data = tasks["cosmosqa"]
    prompt = build_prompt("cosmosqa", data.demos[:1], None, PromptConfig(strategy="base"))
    demo, item = data.demos[0], data.items[0]
    opts = "".join(f"{letter}. {o}\n" for letter, o in zip(LETTERS, demo.options, strict=True))
    assert prompt.prefix == (
        f"Context: {demo.context}\nQuestion: {demo.question}\nChoices:\n{opts}Answer: {LETTERS[demo.label]}\n"
    )
    opts = "".join(f"{letter}. {o}\n" for letter, o in zip(LETTERS, item.options, strict=True))
    assert prompt.render(item) == f"Context: {item.context}\nQuestion: {item.question}\nChoices:\n{opts}Answer:"


def test_zero_shot_base_plain_is_just_the_item(tasks):
    item = tasks["mmlu"].items[0]
    prompt = build_prompt("mmlu", tasks["mmlu"].demos, None, PromptConfig(strategy="base", n_shots=0))
    assert prompt.prefix == "" and prompt.full(item).startswith("Question: ")  # MMLU: no context line
    assert prompt.chat is False


def test_render_with_a_shortened_context(tasks):
    item = tasks["halu_summarization"].items[0]
    prompt = build_prompt("halu_summarization", [], None, PromptConfig(strategy="task"))
    short = prompt.render(item, context="Document 1 ...")
    assert short.startswith("Document: Document 1 ...\nQuestion: ") and item.context not in short
    assert prompt.render(item, context="").startswith("Question: ")
    assert prompt.full(item, context="x") == prompt.prefix + prompt.render(item, context="x")
    with pytest.raises(ValueError, match="is a halu_summarization item"):
        build_prompt("mmlu", [], None).render(item)


def test_chat_is_the_templates_when_there_is_one(tasks, tiny_tok):
    demos = tasks["mmlu"].demos
    assert build_prompt("mmlu", demos, tiny_tok).chat is True  # chat=None: the tokenizer has a template
    assert build_prompt("mmlu", demos, None).chat is False
    with pytest.raises(SurefastError, match="chat=True needs the model's tokenizer"):
        build_prompt("mmlu", demos, None, PromptConfig(chat=True))
    plain_tok = type("NoTemplate", (), {"chat_template": None})()
    with pytest.raises(SurefastError, match="no chat template"):
        build_prompt("mmlu", demos, plain_tok, PromptConfig(chat=True))
    system = build_prompt("mmlu", demos, tiny_tok, PromptConfig(system="Answer with one letter."))
    assert system.prefix.startswith("<|im_start|>system\nAnswer with one letter.<|im_end|>\n<|im_start|>user\n")
    plain = build_prompt("mmlu", demos, None, PromptConfig(system="Answer with one letter."))
    assert plain.prefix.startswith("Answer with one letter.\n\nBelow are some examples")


def test_a_template_that_rewrites_content_is_refused(tasks):
    class Trimming:
        chat_template = "x"

        def apply_chat_template(self, messages, **kwargs):
            return "<user>" + messages[-1]["content"].replace("\n", " ") + "<bot>"

    with pytest.raises(SurefastError, match="changes the user message"):
        build_prompt("mmlu", tasks["mmlu"].demos, Trimming(), PromptConfig(chat=True))


def test_config_errors():
    with pytest.raises(SurefastError, match="did you mean 'shared'"):
        PromptConfig(strategy="share")
    with pytest.raises(SurefastError, match="n_shots=7 but mmlu has 0 demos"):
        build_prompt("mmlu", [], None, PromptConfig(n_shots=7))


def test_fingerprint_tracks_the_fixed_texts(tasks, tiny_tok):
    demos = tasks["mmlu"].demos
    fps = {s: build_prompt("mmlu", demos, tiny_tok, PromptConfig(strategy=s)).fingerprint for s in STRATEGIES}
    assert len(set(fps.values())) == 3
    assert build_prompt("mmlu", demos, tiny_tok, PromptConfig(strategy="task")).fingerprint == fps["task"]
    assert build_prompt("mmlu", demos, tiny_tok, PromptConfig(chat=False)).fingerprint != fps["shared"]


class _NewlineRuns:
    """A tokenizer whose trailing "\\n\\n" is one token but "\\n\\nQ" splits: GPT-2's pre-tokenizer, in miniature."""

    def __call__(self, text, add_special_tokens=False):
        out, i = [], 0
        while i < len(text):
            if text.startswith("\n\n", i) and (i + 2 == len(text) or text[i + 2] == "\n"):
                out.append(-2)
                i += 2
            else:
                out.append(ord(text[i]))
                i += 1
        return {"input_ids": out}


def test_cut_moves_to_the_first_newline_when_the_blank_line_would_merge():
    probe = lambda lead: lead + "Question: q\nAnswer:"  # noqa: E731
    assert choose_cut("Intro.\n\n", None, probe) == ("Intro.\n\n", "")
    assert choose_cut("Intro.\n\n", _NewlineRuns(), probe) == ("Intro.\n", "\n")
    assert choose_cut("<head> ", None, probe) == ("", "<head> ")
    assert boundary_ok(_NewlineRuns(), "Intro.\n", "\nQuestion") and not boundary_ok(_NewlineRuns(), "Intro.\n\n", "Q")


def test_render_for_display_is_what_the_model_sees(shared_data, tiny_tok):
    config = TaskConfig(n=50, source=str(shared_data))
    data = load_task("mmlu", config)
    shown = render_for_display("mmlu", "task", 3, tiny_tok, config)
    assert shown == build_prompt("mmlu", data.demos, tiny_tok, PromptConfig(strategy="task")).full(data.items[3])
    small = render_for_display("mmlu", "task", 3, tiny_tok, TaskConfig(n=10, source=str(shared_data)))
    assert small == shown  # nested sampling: item 3 is item 3 whatever N is
    plain = render_for_display("mmlu", None, 3, None, config, PromptConfig(strategy="base", n_shots=0))
    assert plain == "Question: " + data.items[3].question + plain.split(data.items[3].question, 1)[1]
    with pytest.raises(SurefastError, match="item 50 is out of range: mmlu has 50 items"):
        render_for_display("mmlu", "shared", 50, None, config)

"""Prompts in the model's form and within its token budget, on the tiny model's tokenizer."""

import copy

import datasets
import pytest
from transformers import AutoTokenizer

from grpo_tool.errors import UserError
from grpo_tool.prompt_budget import fit_prompts, prompt_token_count, uses_chat


def test_prompt_budget_drops_long_prompts_and_refuses_when_nothing_fits(tiny_model_cache):
    from grpo_tool.tiny_model import ensure_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model())
    rows = datasets.Dataset.from_list([{"prompt": "short"}, {"prompt": "long " * 200}])
    kept = fit_prompts(rows, tokenizer, budget=50, split="train")
    assert kept["prompt"] == ["short"]
    chat = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "chat " * 200}]}])
    with pytest.raises(UserError, match="longer than 50 tokens.*prompt_overflow to truncate"):
        fit_prompts(chat, tokenizer, budget=50, split="eval")


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_cache):
    from grpo_tool.tiny_model import ensure_tiny_model

    return AutoTokenizer.from_pretrained(ensure_tiny_model())


def test_prompts_take_the_form_the_tokenizer_expects(tiny_tokenizer):
    rows = datasets.Dataset.from_list([{"prompt": "What is 2 + 2?"}, {"prompt": "Name a colour."}])
    as_chat = fit_prompts(rows, tiny_tokenizer, budget=100, split="train", chat=True)
    assert as_chat[0]["prompt"] == [{"role": "user", "content": "What is 2 + 2?"}]
    chat_rows = datasets.Dataset.from_list([{"prompt": [{"role": "system", "content": "Be brief."},
                                                        {"role": "user", "content": "Hi"}]}])
    as_text = fit_prompts(chat_rows, tiny_tokenizer, budget=100, split="train", chat=False)
    assert as_text[0]["prompt"] == "System: Be brief.\n\nUser: Hi\n\nAssistant:"
    assert uses_chat("auto", tiny_tokenizer, "tiny") and not uses_chat("text", tiny_tokenizer, "tiny")


def test_chat_format_needs_a_chat_template(tiny_tokenizer):
    tiny_tokenizer = copy.deepcopy(tiny_tokenizer)
    tiny_tokenizer.chat_template = None
    assert not uses_chat("auto", tiny_tokenizer, "base-model")
    with pytest.raises(UserError, match="has no chat template"):
        uses_chat("chat", tiny_tokenizer, "base-model")


def test_truncation_keeps_the_end_of_text_prompts(tiny_tokenizer):
    long_prompt = "filler words here " * 60 + "TL;DR:"
    rows = datasets.Dataset.from_list([{"prompt": long_prompt}, {"prompt": "short"}])
    fitted = fit_prompts(rows, tiny_tokenizer, budget=30, split="train", truncate=True)
    assert len(fitted) == 2
    assert fitted[0]["prompt"].endswith("TL;DR:") and prompt_token_count(tiny_tokenizer, fitted[0]["prompt"]) <= 30
    assert fitted[1]["prompt"] == "short"


def test_truncation_drops_old_turns_first(tiny_tokenizer):
    conversation = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "tell me a long story " * 20},
                    {"role": "assistant", "content": "once upon a time " * 20},
                    {"role": "user", "content": "Now summarise it."}]
    rows = datasets.Dataset.from_list([{"prompt": conversation}])
    fitted = fit_prompts(rows, tiny_tokenizer, budget=40, split="train", chat=True, truncate=True)
    assert fitted[0]["prompt"] == [conversation[0], conversation[3]]
    one_long_turn = [{"role": "user", "content": "word " * 200 + "Question?"}]
    cut = fit_prompts(datasets.Dataset.from_list([{"prompt": one_long_turn}]), tiny_tokenizer, budget=40,
                      split="train", chat=True, truncate=True)[0]["prompt"]
    assert cut[0]["content"].endswith("Question?") and prompt_token_count(tiny_tokenizer, cut) <= 40


def test_streamed_prompts_are_fitted_lazily(tiny_tokenizer):
    rows = datasets.Dataset.from_list([{"prompt": "short"}, {"prompt": "long " * 200}]).to_iterable_dataset()
    fitted = fit_prompts(rows, tiny_tokenizer, budget=20, split="train", chat=True)
    assert [row["prompt"] for row in fitted] == [[{"role": "user", "content": "short"}]]


SYSTEM = "Think, then give the final answer after ####."


def test_system_prompt_goes_first_unless_the_row_has_its_own(tiny_tokenizer):
    from grpo_tool.prompt_budget import fit_to_model
    from grpo_tool.settings import GRPOConfig

    rows = datasets.Dataset.from_list([{"prompt": "What is 2 + 2?", "answer": "4"}])
    own = datasets.Dataset.from_list([{"prompt": [{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": "Hi"}]}])
    config = GRPOConfig(model_name="tiny", system_prompt=SYSTEM, max_seq_length=512, max_completion_length=32)
    data = fit_to_model(datasets.DatasetDict({"train": rows, "eval": own}), tiny_tokenizer, config)
    assert data["train"][0]["prompt"] == [{"role": "system", "content": SYSTEM},
                                          {"role": "user", "content": "What is 2 + 2?"}]
    assert data["train"][0]["answer"] == "4"  # the other columns are untouched
    assert data["eval"][0]["prompt"][0] == {"role": "system", "content": "Be brief."}
    rendered = tiny_tokenizer.apply_chat_template(data["train"][0]["prompt"], tokenize=False)
    assert SYSTEM in rendered  # the chat template renders it
    text = fit_prompts(rows, tiny_tokenizer, budget=100, split="train", system_prompt=SYSTEM)
    assert text[0]["prompt"] == f"{SYSTEM}\n\nWhat is 2 + 2?"  # a model without a chat template reads a paragraph


def test_a_system_prompt_that_reaches_few_or_no_prompts_says_so(tiny_tokenizer, caplog):
    from grpo_tool.prompt_budget import fit_to_model
    from grpo_tool.settings import GRPOConfig

    own = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}]
    plain = [{"prompt": [{"role": "user", "content": "Hello"}]}]
    config = GRPOConfig(model_name="tiny", system_prompt=SYSTEM, max_seq_length=512, max_completion_length=32)
    reached = {}
    for rows, expected in ((own * 3, "system_prompt is unused: all 3 training prompts have a system message"),
                           (own * 2 + plain, "system_prompt: before 1 of 3 training prompts; the other 2 keep")):
        caplog.clear()
        train = datasets.Dataset.from_list(rows)
        fit_to_model(datasets.DatasetDict({"train": train, "eval": train}), tiny_tokenizer, config, reached)
        assert expected in caplog.text
    assert reached["system_prompt"] == (1, 3)
    caplog.clear()
    fit_to_model(datasets.DatasetDict({"train": datasets.Dataset.from_list(plain * 2), "eval": train}),
                 tiny_tokenizer, config)
    assert "system_prompt" not in caplog.text  # before every prompt, as asked: nothing to say


def test_a_template_without_system_messages_gets_it_in_the_first_user_turn(tiny_tokenizer):
    refusing = copy.copy(tiny_tokenizer)
    refusing.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                              "{{ raise_exception('System role not supported') }}{% endif %}"
                              "<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>")
    rows = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "Hi"}]}])
    fitted = fit_prompts(rows, refusing, budget=100, split="train", chat=True, system_prompt=SYSTEM,
                         system_as_message=False)
    assert fitted[0]["prompt"] == [{"role": "user", "content": f"{SYSTEM}\n\nHi"}]
    from grpo_tool.prompt_budget import takes_system_messages

    assert not takes_system_messages(refusing) and takes_system_messages(tiny_tokenizer)


@pytest.mark.parametrize("budget", [30, 12])
def test_truncating_text_whose_cut_tokenizes_longer_still_ends(tiny_tokenizer, budget):
    """A Korean prompt cut at a token boundary can tokenize back to more tokens than the cut left (a character split
    across tokens); truncation must still end, within the budget."""
    from grpo_tool.prompt_budget import truncate_messages

    messages = [{"role": "user", "content": "지구는 태양 주위를 도나요? " * 4}]
    cut = truncate_messages(messages, tiny_tokenizer, budget)
    assert cut is not None and prompt_token_count(tiny_tokenizer, cut) <= budget
    assert messages[0]["content"].rstrip().endswith(cut[0]["content"].strip()[-5:])  # the end is kept

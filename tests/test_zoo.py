"""The long-attention zoo (benchmarks/long_attention_zoo.py) and its appendix page."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import long_attention_zoo as zoo  # noqa: E402

MECHANISMS = zoo.MECHANISMS

PAGE = ROOT / "appendix" / "long-attention-zoo.md"


def test_recall_task_answers_are_the_stored_values():
    task = zoo.recall_task(9, num_train=50, num_test=10)
    tokens, answers = task.train
    assert tokens.shape == (50, 9, 2) and answers.shape == (50,)
    num_keys = 2 * 8
    for row, answer in zip(tokens, answers, strict=True):
        question = row[-1, 0]
        (where,) = (row[:-1, 0] == question).nonzero()[:, 0].tolist()  # the key is stored exactly once
        assert row[where, 1] - num_keys == answer
        assert row[-1, 1] == task.vocab - 1  # the question's "?" token
    assert int(tokens.max()) < task.vocab and 0 <= int(answers.min()) and int(answers.max()) < zoo.NUM_ANSWERS


def test_first_token_task_answer_is_the_first_token():
    task = zoo.first_token_task(7, num_train=20, num_test=5)
    tokens, answers = task.test
    assert tokens.shape == (5, 7) and torch.equal(answers, tokens[:, 0])
    assert not torch.equal(task.train[0][:5], tokens)  # train and test are different draws


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_every_mechanism_trains_in_the_zoo_model(name):
    args = zoo.parse(["--steps", "3", "--batch", "4", "--lengths", "33", "--seeds", "1"])
    args.train_size = args.test_size = 16
    for task in (zoo.recall_task(33, 16, 16), zoo.first_token_task(33, 16, 16)):
        accuracy, seconds, peak, parameters = zoo.train_one(name, MECHANISMS[name], task, 0, args)
        assert 0.0 <= accuracy <= 1.0 and seconds > 0 and peak > 0 and parameters > 0


def test_models_have_equal_parameters_across_mechanisms():
    task = zoo.first_token_task(9, 4, 4)
    counts = {
        sum(p.numel() for p in zoo.ZooModel(task.vocab, task.length, fn, 32, 4, 2).parameters())
        for fn in MECHANISMS.values()
    }
    assert len(counts) == 1


def test_full_attention_learns_first_token_copy():
    """The budget is enough for full attention on the easy task (and the read-out is wired right)."""
    args = zoo.parse(["--steps", "300", "--batch", "32", "--lengths", "9", "--seeds", "1", "--warmup", "10"])
    args.lr = 3e-3
    task = zoo.first_token_task(9, 2000, 400)
    accuracy, *_ = zoo.train_one("full", MECHANISMS["full"], task, 0, args)
    assert accuracy > 0.9  # chance is 1/16


def test_page_is_written_whole(tmp_path):
    out = tmp_path / "zoo.md"
    results = zoo.main(
        ["--steps", "2", "--batch", "4", "--lengths", "9", "--seeds", "2", "--mechanisms", "full", "--out", str(out)]
        + ["--train-size", "16", "--test-size", "16"]
    )
    text = out.read_text()
    assert text.startswith("(appendix-long-attention-zoo)=") and "--steps 2" in text
    assert len(results) == 2 and all(len(r.accuracies) == 2 for r in results)
    assert sum(line.startswith("| full |") for line in text.splitlines()) == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_arguments_are_named():
    with pytest.raises(SystemExit):
        zoo.parse(["--width", "30", "--heads", "4"])
    with pytest.raises(SystemExit, match="unknown mechanism"):
        zoo.run(zoo.parse(["--mechanisms", "nope"]))


def test_page_lists_every_mechanism_of_the_registry():
    text = PAGE.read_text()
    rows = re.findall(r"^\| ([\w-]+) \| (recall|first) \| (\d+) \|", text, flags=re.M)
    assert {name for name, _, _ in rows} == set(MECHANISMS), "rerun the command on the page after adding one"
    lengths = {int(t) for _, _, t in rows}
    assert len(lengths) >= 2
    assert re.search(r"```bash\npython benchmarks/long_attention_zoo.py", text)


def test_parallel_jobs_give_the_same_results():
    """Each training is seeded on its own, so running them in two processes changes no accuracy."""
    argv = ["--steps", "3", "--batch", "4", "--lengths", "9", "--seeds", "2", "--mechanisms", "full", "sliding"]
    argv += ["--train-size", "32", "--test-size", "32"]
    one, two = zoo.run(zoo.parse(argv)), zoo.run(zoo.parse([*argv, "--jobs", "2"]))
    assert [(r.mechanism, r.task, r.accuracies) for r in one] == [(r.mechanism, r.task, r.accuracies) for r in two]

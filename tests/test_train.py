"""attnbook.train: schedule, seeded data order, atomic checkpoints, NaN guard, fit_or_load, resume after SIGKILL."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from attnbook.train import (
    AtomicCheckpointIO,
    CharDataModule,
    EngineOptions,
    EpochSeededSampler,
    GPTModule,
    NonFiniteLossError,
    fit_or_load,
    load_module,
    plot_learning_curves,
    read_metrics,
    trainer_kwargs,
    warmup_cosine_factor,
)
from attnbook.train import checkpoint as checkpoint_module
from attnbook.train import engine as engine_module
from attnbook.train.checkpoint import CorruptCheckpointError
from attnbook.train.lock import RunFolderLockedError, RunLock

#: Shrinks the gpt-quick preset to a run of seconds: a 1-layer 32-dim GPT on 20k characters of the stdlib.
TINY_GPT = [
    "--model.init_args.n_layer", "1", "--model.init_args.n_head", "2", "--model.init_args.n_embd", "32",
    "--model.init_args.block_size", "16", "--model.init_args.warmup_steps", "4",
    "--data.init_args.block_size", "16", "--data.init_args.max_chars", "20000", "--data.init_args.batch_size", "8",
    "--data.init_args.batches_per_epoch", "6", "--data.init_args.val_batches", "2",
    "--engine.progress_bar", "false", "--engine.loggers", "[csv]", "--trainer.log_every_n_steps", "3",
]  # fmt: skip


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 200, encoding="utf-8")
    return path


def _tiny_trainer(run_dir: Path, **kwargs) -> pl.Trainer:
    engine = EngineOptions(run_dir=str(run_dir), loggers=["csv"], progress_bar=False)
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "num_sanity_val_steps": 0,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
        **kwargs,
    }
    return pl.Trainer(**trainer_kwargs(engine, **options))


def _tiny_parts(text_file: Path, batches: int = 4) -> tuple[GPTModule, CharDataModule]:
    data = CharDataModule(corpus=str(text_file), block_size=8, batch_size=4, batches_per_epoch=batches, val_batches=1)
    torch.manual_seed(0)
    model = GPTModule(block_size=8, n_layer=1, n_head=2, n_embd=16, warmup_steps=2)
    return model, data


# ------------------------------------------------------------------------------------------------ schedule
def test_warmup_cosine_schedule_shape() -> None:
    W, S, r = 10, 110, 0.1
    factors = [warmup_cosine_factor(s, W, S, r) for s in range(S + 20)]
    assert factors[0] == pytest.approx(1 / W)
    assert factors[W - 1] == pytest.approx(1.0)  # peak at the end of the warm-up
    assert all(a < b for a, b in zip(factors[:W], factors[1:W], strict=False))  # rising warm-up
    assert all(a >= b for a, b in zip(factors[W:], factors[W + 1 :], strict=False))  # then never rising
    assert factors[W + (S - W) // 2] == pytest.approx(r + (1 - r) * 0.5)  # cosine midpoint
    assert factors[S] == pytest.approx(r) and factors[-1] == pytest.approx(r)  # floor, held past the end


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"total_steps": 0}, "total_steps"),
        ({"min_lr_ratio": 2}, "min_lr_ratio"),
    ],
)
def test_warmup_cosine_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    arguments = {"step": 0, "warmup_steps": 1, "total_steps": 10, "min_lr_ratio": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        warmup_cosine_factor(**arguments)


# ------------------------------------------------------------------------------------------------ data order
def test_epoch_seeded_sampler_is_a_function_of_seed_and_epoch() -> None:
    a, b = EpochSeededSampler(1000, 50, seed=3), EpochSeededSampler(1000, 50, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)  # a fresh process resuming at epoch 4 draws the same windows
    b.set_epoch(5)
    assert list(a) != list(b)
    perm = EpochSeededSampler(20, 20, seed=0, replacement=False)
    assert sorted(perm) == list(range(20))
    with pytest.raises(ValueError, match="num_samples"):
        EpochSeededSampler(5, 6, replacement=False)


def test_char_datamodule_windows_and_errors(text_file: Path) -> None:
    data = CharDataModule(corpus=str(text_file), block_size=8, batch_size=4, batches_per_epoch=3, val_batches=2)
    data.setup("fit")
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == y.shape == (4, 8)
    torch.testing.assert_close(x[:, 1:], y[:, :-1])  # y is x shifted by one
    assert len(data.train_dataloader()) == 3 and len(data.val_dataloader()) == 2
    assert data.tokenizer.decode(x[0]) in text_file.read_text()
    with pytest.raises(FileNotFoundError, match="no file at"):
        CharDataModule(corpus="/no/such/corpus.txt")
    with pytest.raises(ValueError, match="block_size"):
        CharDataModule(block_size=0)


# ------------------------------------------------------------------------------------------------ checkpoints
def test_atomic_checkpoint_survives_a_crash_mid_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"weights": torch.arange(4.0), "global_step": 1}, target)
    (target.parent / ".last.ckpt.99999.tmp").write_bytes(b"left by a process killed mid-write")

    real_save = torch.save

    def crash_half_way(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")  # some bytes reach the disk, then the "power fails"
        raise OSError("simulated crash during the write")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash_half_way)
    with pytest.raises(OSError, match="simulated crash"):
        io.save_checkpoint({"weights": torch.zeros(4), "global_step": 2}, target)
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)

    loaded = torch.load(target, weights_only=True)  # still the complete previous checkpoint
    assert loaded["global_step"] == 1
    torch.testing.assert_close(loaded["weights"], torch.arange(4.0))
    # its own temporary file is gone; another writer's (perhaps alive: a temporary file names no live process) stays
    assert sorted(p.name for p in target.parent.iterdir()) == [".last.ckpt.99999.tmp", "last.ckpt"]


def test_two_processes_saving_one_checkpoint_both_succeed(
    tmp_path: Path, subprocess_env: dict[str, str], subprocess_shim: str
) -> None:
    """Two notebooks training the same run: each save renames its own temporary file, never the other's."""
    target = tmp_path / "last.ckpt"
    script = tmp_path / "saver.py"
    script.write_text(
        subprocess_shim
        + "import sys\nfrom attnbook.train.checkpoint import atomic_torch_save\n"
        + "for i in range(150):\n"
        + "    atomic_torch_save({'writer': sys.argv[2], 'i': i, 'x': torch.arange(20000)}, sys.argv[1])\n"
    )
    writers = [
        subprocess.Popen([sys.executable, str(script), str(target), name], env=subprocess_env, stderr=subprocess.PIPE)
        for name in ("a", "b")
    ]
    errors = [writer.communicate(timeout=300)[1].decode() for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], errors
    final = torch.load(target, weights_only=True)
    assert final["writer"] in ("a", "b") and final["i"] == 149  # a whole checkpoint of one of them
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "saver.py"]  # no temporary file left


def test_a_full_disk_names_the_checkpoint_and_keeps_the_previous_one(
    tmp_path: Path, text_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, data = _tiny_parts(text_file)
    _tiny_trainer(tmp_path).fit(model, datamodule=data)
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = {p.name: p.read_bytes() for p in last.parent.iterdir()}
    assert sorted(before) == ["best.ckpt", "last.ckpt"]

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 the first blocks")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    model, data = _tiny_parts(text_file)
    with pytest.raises(OSError, match="previous checkpoint at .* is intact") as raised:
        _tiny_trainer(tmp_path, max_epochs=2).fit(model, datamodule=data, ckpt_path=str(last))
    assert raised.value.errno == errno.ENOSPC and "No space left" in str(raised.value)
    assert str(tmp_path / "checkpoints") in str(raised.value)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in last.parent.iterdir()} == before  # intact, as the message says
    assert torch.load(last, weights_only=False)["epoch"] == 0
    assert not [p.name for p in last.parent.iterdir() if p.name.endswith(".tmp")]


def test_engine_uses_atomic_writer_and_stores_the_tokenizer(tmp_path: Path, text_file: Path) -> None:
    model, data = _tiny_parts(text_file)
    trainer = _tiny_trainer(tmp_path)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    trainer.fit(model, datamodule=data)
    last = tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["attnbook"]["tokenizer"] == data.tokenizer.state_dict()
    assert state["attnbook"]["spec"] == {"vocab_size": data.vocab_size}
    loaded = load_module(last)  # no datamodule needed: the spec and the tokenizer come from the checkpoint
    assert isinstance(loaded, GPTModule)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    text = loaded.complete("the ", max_new_tokens=10, generator=torch.Generator().manual_seed(0))
    assert text.startswith("the ") and len(text) == 14


def test_gradient_accumulation_steps_the_optimizer_and_schedule_once_per_group(tmp_path: Path, text_file: Path) -> None:
    model, data = _tiny_parts(text_file, batches=6)
    trainer = _tiny_trainer(tmp_path, accumulate_grad_batches=3)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 2  # 6 batches, 3 per optimizer step
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 2
    assert scheduler.get_last_lr()[0] == pytest.approx(model.lr * warmup_cosine_factor(2, 2, 2, model.min_lr_ratio))


# ------------------------------------------------------------------------------------------------ NaN guard
class _NaNAtBatch(GPTModule):
    def compute_loss(self, batch):
        loss = super().compute_loss(batch)
        return loss * float("nan") if self.global_step == 3 else loss


def test_nan_loss_stops_the_run_naming_the_step(tmp_path: Path, text_file: Path) -> None:
    data = CharDataModule(corpus=str(text_file), block_size=8, batch_size=4, batches_per_epoch=6, val_batches=1)
    model = _NaNAtBatch(block_size=8, n_layer=1, n_head=2, n_embd=16)
    trainer = _tiny_trainer(tmp_path)
    with pytest.raises(NonFiniteLossError, match=r"became nan at step 3 \(epoch 0, batch 3\)"):
        trainer.fit(model, datamodule=data)
    assert trainer.global_step == 3  # the NaN step was never applied
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ chapters' helper
def test_fit_or_load_trains_once_then_loads(tmp_path: Path) -> None:
    overrides = [*TINY_GPT, "--trainer.max_epochs", "2"]
    first = fit_or_load("gpt-quick", run_dir=tmp_path / "run", overrides=overrides)
    assert first.trained and first.last_checkpoint is not None and first.best_checkpoint is not None
    assert first.trainer.global_step == 12
    assert math.isfinite(first.metrics["val/loss"])
    second = fit_or_load("gpt-quick", run_dir=tmp_path / "run", overrides=overrides)
    assert not second.trained  # the finished run is restored, not retrained
    for a, b in zip(first.module.parameters(), second.module.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    figure = plot_learning_curves(first.run_dir)
    assert figure.axes[0].get_xlabel() == "optimizer step"
    assert {"train/loss", "val/loss"} <= {line.get_label() for line in figure.axes[0].get_lines()}
    with pytest.raises(FileNotFoundError, match="run_dir"):
        plot_learning_curves(tmp_path / "nowhere")


def test_fit_or_load_trains_afresh_when_the_code_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = [*TINY_GPT, "--trainer.max_epochs", "1"]
    first = fit_or_load("gpt-quick", run_dir=tmp_path / "run", overrides=overrides)
    assert first.trained
    key = json.loads((tmp_path / "run" / "cache_key.json").read_text())
    assert key["code"] == engine_module.code_fingerprint() and key["torch"] == torch.__version__
    assert key["data"] == hashlib.sha256(first.datamodule.load_text().encode()).hexdigest()
    assert not fit_or_load("gpt-quick", run_dir=tmp_path / "run", overrides=overrides).trained
    monkeypatch.setattr(engine_module, "code_fingerprint", lambda: "the model's code changed")
    changed = fit_or_load("gpt-quick", run_dir=tmp_path / "run", overrides=overrides)
    assert changed.trained, "a checkpoint of other code was loaded"
    assert changed.trainer.global_step == 6  # one epoch from scratch, not a resumed run
    assert json.loads((tmp_path / "run" / "cache_key.json").read_text())["code"] == "the model's code changed"
    assert not fit_or_load("gpt-quick", run_dir=tmp_path / "run", overrides=overrides).trained


def test_fit_or_load_default_folder_is_keyed_and_the_corpus_is_fingerprinted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATTNBOOK_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 100, encoding="utf-8")
    overrides = [*TINY_GPT, "--trainer.max_epochs", "1", "--data.init_args.corpus", str(corpus)]
    first = fit_or_load("gpt-quick", overrides=overrides)
    assert first.trained and first.run_dir.parent == tmp_path / "cache" / "runs"
    assert first.run_dir.name.startswith("gpt-quick-")
    corpus.write_text("pack my box with five dozen liquor jugs. " * 100, encoding="utf-8")  # same path, new text
    second = fit_or_load("gpt-quick", overrides=overrides)
    assert second.run_dir == first.run_dir and second.trained, "a model of the old corpus was loaded"
    monkeypatch.setattr(engine_module, "code_fingerprint", lambda: "other code")
    assert fit_or_load("gpt-quick", overrides=overrides).run_dir != first.run_dir  # each code version: its folder


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder`` with its size and modification time (ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_a_corrupt_cached_checkpoint_names_the_file_and_how_to_retrain(tmp_path: Path) -> None:
    overrides = [*TINY_GPT, "--trainer.max_epochs", "1"]
    fit_or_load("gpt-quick", run_dir=tmp_path / "run", overrides=overrides)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])  # a copy cut short
    with pytest.raises(CorruptCheckpointError, match="retrain=True") as raised:
        fit_or_load("gpt-quick", run_dir=tmp_path / "run", overrides=overrides)
    assert str(last) in str(raised.value) and str(tmp_path / "run") in str(raised.value)
    assert "Traceback" not in str(raised.value)
    assert fit_or_load("gpt-quick", run_dir=tmp_path / "run", overrides=overrides, retrain=True).trained
    assert not fit_or_load("gpt-quick", run_dir=tmp_path / "run", overrides=overrides).trained
    last.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CorruptCheckpointError, match=f"{last}.*corrupt"):
        load_module(last)


def test_loading_a_finished_run_writes_nothing(tmp_path: Path, make_read_only) -> None:
    """A teacher's pre-trained run on a read-only share: fit_or_load only reads it (and works without write access)."""
    overrides = [*TINY_GPT, "--trainer.max_epochs", "2", "--engine.loggers", "[csv, tensorboard]"]
    first = fit_or_load("gpt-quick", run_dir=tmp_path / "run", overrides=overrides)
    assert first.trained and list((tmp_path / "run" / "tensorboard").glob("events.*"))
    before = _snapshot(tmp_path / "run")
    time.sleep(0.01)  # a rewrite would show in the modification times
    loaded = fit_or_load("gpt-quick", run_dir=tmp_path / "run", overrides=overrides)
    assert not loaded.trained and loaded.trainer.global_step == 12
    assert _snapshot(tmp_path / "run") == before
    make_read_only(tmp_path / "run")
    shared = fit_or_load("gpt-quick", run_dir=tmp_path / "run", overrides=overrides)
    assert not shared.trained
    for a, b in zip(first.module.parameters(), shared.module.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert _snapshot(tmp_path / "run") == before


def test_run_lock_names_its_holder_and_takes_over_a_stale_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    held = RunLock(tmp_path).acquire()
    with pytest.raises(RunFolderLockedError, match=f"{tmp_path}.* in use by another run: process {os.getpid()} on "):
        RunLock(tmp_path).acquire()
    held.release()
    assert not (tmp_path / "run.lock").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs, as a killed run leaves in its lock file
    (tmp_path / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": "here", "started": "earlier"}))
    with caplog.at_level("WARNING"), RunLock(tmp_path) as lock:
        assert lock.holder()["pid"] == os.getpid()
    assert f"taking over a stale lock of process {dead.pid} on here" in caplog.text


def test_two_notebooks_training_one_chapter_share_one_run(
    tmp_path: Path, subprocess_env: dict[str, str], subprocess_shim: str, logged_steps
) -> None:
    """Two processes call fit_or_load on one run folder at once: one trains, the other waits and loads it."""
    script = tmp_path / "notebook.py"
    script.write_text(
        subprocess_shim
        + "import json, sys\nfrom attnbook.train import fit_or_load\n"
        + "result = fit_or_load('gpt-quick', run_dir=sys.argv[1], overrides=json.loads(sys.argv[2]))\n"
        + "print(json.dumps({'trained': result.trained, 'step': result.trainer.global_step,"
        + " 'weight': sum(p.double().sum().item() for p in result.module.parameters())}))\n"
    )
    overrides = json.dumps([*TINY_GPT, "--trainer.max_epochs", "3"])
    command = [sys.executable, str(script), str(tmp_path / "run"), overrides]
    notebooks = [
        subprocess.Popen(command, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [notebook.communicate(timeout=300) for notebook in notebooks]
    assert [n.returncode for n in notebooks] == [0, 0], [err[-2000:] for _, err in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sorted(r["trained"] for r in results) == [False, True]
    assert results[0]["step"] == results[1]["step"] == 18 and results[0]["weight"] == results[1]["weight"]
    steps = logged_steps(tmp_path / "run")
    assert steps == sorted(set(steps)) and len(steps) == 18 // 3  # one run's log, each logged step once
    assert not (tmp_path / "run" / "run.lock").exists()


# ------------------------------------------------------------------------------------------------ resume after kill
def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


def _logged(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    return {k: v for k, v in read_metrics(run_dir).items() if not k.startswith("perf/")}  # timings differ


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(
    tmp_path: Path, attnbook_command: list[str], subprocess_env: dict[str, str]
) -> None:
    epochs = 8
    command = [*attnbook_command, "fit", "--config", "gpt-quick", *TINY_GPT, "--trainer.max_epochs", str(epochs)]
    env = subprocess_env

    straight = tmp_path / "straight"
    subprocess.run([*command, "--engine.run_dir", str(straight)], env=env, check=True, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [*command, "--engine.run_dir", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # a real, uncatchable kill, part-way through the run
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    reached = torch.load(last, weights_only=False)["epoch"]
    assert reached < epochs - 1  # it really was interrupted

    resume = subprocess.run(
        [*command, "--engine.run_dir", str(killed), "--ckpt_path", "last"], env=env, capture_output=True, text=True
    )
    assert resume.returncode == 0, resume.stderr[-2000:]

    a, b = _final_state(straight), _final_state(killed)
    assert a["global_step"] == b["global_step"] == epochs * 6
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=0, atol=0, msg=name)
    moments_a, moments_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert moments_a.keys() == moments_b.keys()
    for key, moments in moments_a.items():
        torch.testing.assert_close(moments_b[key]["exp_avg_sq"], moments["exp_avg_sq"], rtol=0, atol=0)
    logged_a, logged_b = _logged(straight), _logged(killed)
    assert logged_a.keys() == logged_b.keys()
    for name in logged_a:
        assert logged_b[name] == logged_a[name], name
    assert len(logged_a["val/loss"]) == epochs

"""The ``attnbook`` command: every preset runs end to end (shrunk), predict/generate work, errors are one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch  # noqa: F401  (imported here, its log handlers bind to a stream that stays open)
import pytest
import torch

from attnbook.cli import main
from attnbook.train.curves import read_metrics
from attnbook.train.presets import preset_description, preset_names

REPO = Path(__file__).resolve().parents[1]
PRESETS = ["gpt-quick", "gpt-full", "seq2seq-quick", "seq2seq-full", "pointer-hull-quick", "pointer-hull-full"]

_COMMON = [
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_epochs", "1",
    "--trainer.log_every_n_steps", "1", "--trainer.enable_model_summary", "false",
    "--engine.progress_bar", "false", "--model.init_args.compile", "false", "--model.init_args.warmup_steps", "2",
    "--data.init_args.batches_per_epoch", "3", "--data.init_args.val_batches", "1", "--data.init_args.num_workers", "0",
]  # fmt: skip
#: Per model: the smallest sizes that still run every code path of the preset (precision stays as the preset says).
_SHRINK = {
    "gpt": [
        "--model.init_args.n_layer", "1", "--model.init_args.n_head", "2", "--model.init_args.n_embd", "32",
        "--model.init_args.block_size", "16", "--data.init_args.block_size", "16", "--data.init_args.corpus", "stdlib",
        "--data.init_args.max_chars", "20000", "--data.init_args.batch_size", "4",
    ],
    "seq2seq": [
        "--model.init_args.d_model", "16", "--model.init_args.num_heads", "2",
        "--model.init_args.dim_feedforward", "32", "--model.init_args.num_encoder_layers", "1",
        "--model.init_args.num_decoder_layers", "1",
        "--data.init_args.batch_size", "8",
    ],
    "pointer": [
        "--model.init_args.hidden_dim", "16", "--data.init_args.batch_size", "8",
        "--data.init_args.num_points", "12", "--data.init_args.test_num_points", "14",
    ],
}  # fmt: skip


def shrunk(preset: str, run_dir: Path) -> list[str]:
    return ["--config", preset, *_COMMON, *_SHRINK[preset.split("-")[0]], "--engine.run_dir", str(run_dir)]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_presets_command_lists_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert sorted(PRESETS) == preset_names()
    code, out, _ = run(capsys, "presets")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == len(PRESETS)
    for name, line in zip(preset_names(), lines, strict=True):
        assert line.startswith(name) and preset_description(name) in line and len(preset_description(name)) > 20
    assert any("GPU" in preset_description(n) for n in PRESETS if n.endswith("-full"))
    assert all("CPU" in preset_description(n) for n in PRESETS if n.endswith("-quick"))


def test_module_entry_point_runs_as_a_command() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    result = subprocess.run(
        [sys.executable, "-m", "attnbook.cli", "presets"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "gpt-quick" in result.stdout


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.endswith("-full")])
def test_full_presets_configure_the_gpu_path(preset: str, tmp_path: Path) -> None:
    """The full presets unchanged (nothing is trained: CI has no GPU): bf16, compile, periodic checkpoints."""
    from attnbook.train.engine import AttnbookCLI
    from attnbook.train.presets import preset_path

    cli = AttnbookCLI(args=["--config", str(preset_path(preset)), "--engine.run_dir", str(tmp_path)], run=False)
    assert cli.trainer.precision == ("32-true" if preset.startswith("pointer") else "bf16-mixed")
    assert cli.model.compile is preset.startswith("gpt")
    assert cli.engine.save_every_n_epochs > 0
    assert cli.trainer.max_epochs * cli.datamodule.batches_per_epoch >= 5000  # full size: thousands of steps


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_runs_end_to_end(preset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = ["--engine.peak_flops", "1e11"] if preset.startswith("gpt") else []
    code, _, err = run(capsys, "fit", *shrunk(preset, tmp_path), *extra)
    assert code == 0, err[-3000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "config.yaml").is_file()
    logged = read_metrics(tmp_path)
    assert len(logged["train/loss"]) == 3 and len(logged["val/loss"]) == 1
    assert all(torch.isfinite(torch.tensor(v)) for _, v in logged["val/loss"])
    assert "perf/tokens_per_sec" in logged and any(k.startswith("lr-") for k in logged)
    if extra:  # MFU = training FLOPs per token x tokens/s / peak FLOP/s
        from attnbook.train.engine import load_module

        flops = load_module(tmp_path / "checkpoints" / "last.ckpt").train_flops_per_token()
        (_, tokens_per_sec), (_, mfu) = logged["perf/tokens_per_sec"][-1], logged["perf/mfu"][-1]
        assert mfu == pytest.approx(flops * tokens_per_sec / 1e11, rel=1e-5)


def test_gpt_validate_test_predict_and_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = shrunk("gpt-quick", tmp_path)
    assert run(capsys, "fit", *args)[0] == 0
    records = {name: (tmp_path / name).read_bytes() for name in ("config.yaml", "metrics.csv")}
    for command in ("validate", "test"):  # the README's evaluation command, with another batch count
        code, _, err = run(capsys, command, *args, "--ckpt_path", "best", "--data.init_args.val_batches", "2")
        assert code == 0, err[-3000:]
        assert "val_batches: 2" in (tmp_path / command / "config.yaml").read_text()  # its own records
    assert "test/loss" in read_metrics(tmp_path / "test") and "val/loss" in read_metrics(tmp_path / "validate")
    code, out, err = run(capsys, "predict", *args, "--ckpt_path", "last", "--model.init_args.max_new_tokens", "8")
    assert code == 0, err[-3000:]
    assert out.count(" -> ") == 4  # one continuation per window of the first test batch
    assert (tmp_path / "predict" / "predictions.pt").is_file()
    # the training run's recipe and log are as training left them
    assert {name: (tmp_path / name).read_bytes() for name in records} == records

    last = str(tmp_path / "checkpoints" / "last.ckpt")
    code, out, err = run(capsys, "generate", "--ckpt", last, "--prompt", "def ", "--max_new_tokens", "30")
    assert code == 0, err
    assert out.startswith("def ") and len(out.rstrip("\n")) >= 34
    again = run(capsys, "generate", "--ckpt", last, "--prompt", "def ", "--max_new_tokens", "30")[1]
    assert again == out  # seeded sampling
    code, _, err = run(capsys, "generate", "--ckpt", last, "--prompt", "\u2603")
    assert code == 1 and "vocabulary" in err


def test_resume_with_ckpt_path_last_continues_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = shrunk("seq2seq-quick", tmp_path)
    assert run(capsys, "fit", *args)[0] == 0
    code, _, err = run(capsys, "fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert code == 0, err[-3000:]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    assert len(read_metrics(tmp_path)["val/loss"]) == 2  # both epochs in one log


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["fit", "--config", "gpt-huge"], 2, "'gpt-huge' is neither a shipped preset"),
        (["fit", "--config", "configs/missing.yaml"], 2, "no config file at 'configs/missing.yaml'"),
        (["fit", "--config", "gpt-quick", "--model.init_args.n_layr", "3"], 2, "Option 'n_layr' is not accepted"),
        (["fit", "--config", "gpt-quick", "--model.init_args.n_layer", "many"], 2, 'key "n_layer"'),
        (["fit", "--config", "gpt-quick", "--engine.loggers", "[wandb]"], 1, "engine.loggers: unknown logger(s)"),
        (["fit", "--config", "gpt-quick", "--model.init_args.n_head", "5"], 1, "model: GPTConfig.n_head=5"),
        (["fit", "--config", "pointer-hull-quick", "--data.init_args.task", "sorting"], 1, "model.input_dim=2"),
        (["fit", "--config", "gpt-quick", "--ckpt_path", "/no/such.ckpt"], 1, "--ckpt_path: no checkpoint file"),
        (["generate", "--ckpt", "/no/such.ckpt"], 2, "--ckpt: no checkpoint file at '/no/such.ckpt'"),
        (["train", "--config", "gpt-quick"], 2, "unknown command 'train'"),
    ],
)
def test_errors_are_one_clear_line(
    args: list[str], code: int, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if args[0] == "fit":
        args = [*args, "--engine.run_dir", str(tmp_path), "--trainer.max_epochs", "1"]
        args += ["--data.init_args.batches_per_epoch", "1", "--engine.progress_bar", "false"]
    got, out, err = run(capsys, *args)
    assert got == code, err
    assert err.startswith("attnbook: error:") and needle in err
    assert "Traceback" not in err + out


def test_fit_never_overwrites_a_run_by_accident(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = shrunk("pointer-hull-quick", tmp_path)
    assert run(capsys, "fit", *args)[0] == 0
    before = (tmp_path / "checkpoints" / "last.ckpt").read_bytes()
    code, _, err = run(capsys, "fit", *args)
    assert code == 1 and "already holds a run" in err and "--ckpt_path last" in err
    assert (tmp_path / "checkpoints" / "last.ckpt").read_bytes() == before
    code, _, err = run(capsys, "fit", *args, "--engine.overwrite", "true", "--data.init_args.seed", "1")
    assert code == 0, err[-3000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").read_bytes() != before
    assert len(read_metrics(tmp_path)["val/loss"]) == 1  # the old run's log is gone


def test_generate_refuses_a_checkpoint_that_is_not_a_gpt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "fit", *shrunk("pointer-hull-quick", tmp_path))[0] == 0
    code, _, err = run(capsys, "generate", "--ckpt", str(tmp_path / "checkpoints" / "last.ckpt"))
    assert code == 2 and "holds a PointerModule, not a GPT" in err

"""The ``attnbook`` command: every preset runs end to end (shrunk), predict/generate work, errors are one clear line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch  # noqa: F401  (imported here, its log handlers bind to a stream that stays open)
import pytest
import torch

from attnbook.cli import main
from attnbook.train.curves import read_metrics
from attnbook.train.presets import preset_description, preset_names

REPO = Path(__file__).resolve().parents[1]
PRESETS = [
    "gpt-quick",
    "gpt-full",
    "gpt-long-full",
    "seq2seq-quick",
    "seq2seq-full",
    "pointer-hull-quick",
    "pointer-hull-full",
    "vit-digits-quick",
    "vit-cifar10-full",
]

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
    "vit": [  # CIFAR-10 cannot be downloaded here: the full preset's model and augmentation run on the digits
        "--model.init_args.dim", "16", "--model.init_args.depth", "1", "--model.init_args.num_heads", "2",
        "--model.init_args.patch_size", "4", "--data.init_args.dataset", "digits", "--data.init_args.batch_size", "8",
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
    assert cli.model.compile is preset.startswith(("gpt", "vit"))
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


# ------------------------------------------------------------------------------------------------ records
def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.exists(), f"{path} never appeared (the process exited with {process.poll()})"


def test_a_second_fit_into_a_running_folder_is_refused_naming_the_holder(
    tmp_path: Path, attnbook_command: list[str], subprocess_env: dict[str, str], logged_steps
) -> None:
    args = [*shrunk("gpt-quick", tmp_path), "--trainer.max_epochs", "100000"]  # runs until stopped
    first = subprocess.Popen([*attnbook_command, "fit", *args], env=subprocess_env, stderr=subprocess.DEVNULL)
    try:
        _wait_for(tmp_path / "checkpoints" / "last.ckpt", first)
        second = subprocess.run(
            [*attnbook_command, "fit", *args, "--engine.overwrite", "true"],
            env=subprocess_env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert first.poll() is None, "the first run ended before the second tried"
        assert second.returncode == 1, second.stderr[-2000:]
        assert f"the run folder '{tmp_path}' is in use by another run: process {first.pid} on " in second.stderr
        assert "Traceback" not in second.stderr
        assert (tmp_path / "checkpoints" / "last.ckpt").is_file()  # --engine.overwrite did not clear the live run
    finally:
        first.kill()
        first.wait()
    steps = logged_steps(tmp_path)
    assert steps == sorted(set(steps))  # one run's rows only, each step once


def test_ctrl_c_exits_130_saying_how_to_resume_and_resuming_logs_each_step_once(
    tmp_path: Path, attnbook_command: list[str], subprocess_env: dict[str, str], logged_steps
) -> None:
    args = [*shrunk("gpt-quick", tmp_path), "--data.init_args.batches_per_epoch", "40"]
    run_ = subprocess.Popen(
        [*attnbook_command, "fit", *args, "--trainer.max_epochs", "100000"],
        env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # A terminal's Ctrl-C reaches a process that handles SIGINT. A child inherits an ignored SIGINT (and
        # Python then installs no KeyboardInterrupt handler); Lightning ignores SIGINT in a process where a run
        # was interrupted, so a test process may pass that on: give the child the default disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    last = tmp_path / "checkpoints" / "last.ckpt"
    _wait_for(last, run_)
    time.sleep(1.0)  # part-way into the next epoch: its steps are logged, but not checkpointed
    run_.send_signal(signal.SIGINT)
    try:
        _, err = run_.communicate(timeout=300)  # a loaded machine can take a while to wind down
    except subprocess.TimeoutExpired:
        run_.kill()
        pytest.fail(f"attnbook fit did not stop on SIGINT (the test's own SIGINT: {signal.getsignal(signal.SIGINT)})")
    assert run_.returncode == 130, err[-2000:]
    assert f"attnbook: error: interrupted; '{last}' holds the last finished epoch" in err
    assert "resume with the same command and --ckpt_path last" in err
    epoch = torch.load(last, weights_only=False)["epoch"]
    resume = subprocess.run(
        [*attnbook_command, "fit", *args, "--trainer.max_epochs", str(epoch + 2), "--ckpt_path", "last"],
        env=subprocess_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resume.returncode == 0, resume.stderr[-2000:]
    assert logged_steps(tmp_path) == list(range(40 * (epoch + 2)))  # every step once, none twice
    assert len(logged_steps(tmp_path, "val/loss")) == epoch + 2


def test_a_failed_resume_keeps_the_run_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "fit", *shrunk("pointer-hull-quick", tmp_path))[0] == 0
    records = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert {"config.yaml", "metrics.csv"} <= set(records)
    code, _, err = run(capsys, "fit", *shrunk("seq2seq-quick", tmp_path), "--ckpt_path", "last")  # another model
    assert code == 1 and "state_dict" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == records


@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_evaluating_a_missing_last_checkpoint_is_an_error(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, command, *shrunk("gpt-quick", tmp_path / "no-run"), "--ckpt_path", "last")
    assert code == 1, err[-2000:]
    assert f"--ckpt_path last: no last checkpoint at '{tmp_path / 'no-run' / 'checkpoints' / 'last.ckpt'}'" in err
    assert not (tmp_path / "no-run").exists()  # nothing evaluated, nothing written


def test_evaluating_a_run_on_a_read_only_share(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, make_read_only
) -> None:
    args = shrunk("gpt-quick", tmp_path / "run")
    assert run(capsys, "fit", *args, "--engine.loggers", "[csv, tensorboard]")[0] == 0
    before = {str(p): p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
    make_read_only(tmp_path / "run")
    code, out, err = run(capsys, "test", *args, "--ckpt_path", "best")
    assert code == 0, err[-3000:]
    assert "test/loss" in out + err  # the results are shown
    assert "is read-only: the test results are shown, not saved" in caplog.text
    assert {str(p): p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")} == before


def test_logs_that_are_not_a_terminal_get_one_line_per_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*shrunk("gpt-quick", tmp_path), "--engine.progress_bar", "true", "--trainer.max_epochs", "2"]
    code, _, err = run(capsys, "fit", *args)
    assert code == 0, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert all("train/loss" in line and "val/loss" in line for line in lines)
    assert "\r" not in err and "it/s" not in err  # no progress bar redrawn line by line


@pytest.mark.parametrize(
    "args, needle",
    [
        (["fit", "--trainer.max_step", "5"], "unrecognized arguments: --trainer.max_step 5"),
        (["generate", "--ckpt", "x.ckpt", "--max_new", "5"], "unrecognized arguments: --max_new 5"),
        (["presets", "--he"], "unrecognized arguments: --he"),
    ],
)
def test_option_prefixes_are_not_expanded(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if args[0] == "fit":  # were the prefix expanded, a tiny run in a temporary folder
        args = [*args, *shrunk("gpt-quick", tmp_path)]
    code, _, err = run(capsys, *args)
    assert code == 2 and needle in err


def test_generate_rejects_zero_samples_and_a_missing_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "fit", *shrunk("gpt-quick", tmp_path))[0] == 0
    last = str(tmp_path / "checkpoints" / "last.ckpt")
    code, out, err = run(capsys, "generate", "--ckpt", last, "--num_samples", "0")
    assert code == 2 and "--num_samples must be >= 1, got 0" in err and not out
    code, _, err = run(capsys, "generate", "--ckpt", last, "--device", "tpu9")
    assert code == 2 and "--device: 'tpu9' is not a device" in err
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    code, _, err = run(capsys, "generate", "--ckpt", last, "--device", "cuda")
    assert code == 2 and "no CUDA GPU" in err and "torch.load" not in err


def test_generate_names_a_corrupt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corrupt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"PK\x03\x04 a checkpoint cut short")
    code, _, err = run(capsys, "generate", "--ckpt", str(corrupt))
    assert code == 1 and f"the checkpoint '{corrupt}' is corrupt or incomplete" in err
    assert f"delete the run folder '{tmp_path / 'run'}'" in err and "Traceback" not in err

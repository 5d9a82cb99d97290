"""A light command line and a lean training step: what the commands import, what ``fit --help`` shows, the
train/validation split, the model summary's FLOPs, the GPT's exact-GELU and one-GEMM projection paths."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attnbook.cli import main
from attnbook.models.gpt import GPT, MLP, CausalSelfAttention, GPTConfig

REPO = Path(__file__).resolve().parents[1]


def _imports_after(code: str) -> set[str]:
    """The heavy packages a fresh interpreter has imported after running ``code`` (with the repository first)."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in ('torch', 'lightning', 'jsonargparse') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    return set(eval(result.stdout.strip().splitlines()[-1]))  # noqa: S307 (our own printed list)


def test_presets_and_help_import_neither_torch_nor_lightning() -> None:
    assert _imports_after("from attnbook.cli import main; main(['presets'])") == set()
    assert _imports_after("from attnbook.cli import main; main(['fit', '--config', 'gpt-quick', '--help'])") == set()
    assert _imports_after("from attnbook.cli import main; main(['--help'])") == set()
    assert _imports_after("import attnbook, attnbook.train") == set()


def test_fit_help_lists_the_presets_model_and_data_options(capsys: pytest.CaptureFixture[str]) -> None:
    from attnbook.train import CharDataModule, EngineOptions, GPTModule

    assert main(["fit", "--config", "gpt-quick", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Model: attnbook.train.GPTModule" in out and "Data: attnbook.train.CharDataModule" in out
    for cls, prefix in ((GPTModule, "--model.init_args."), (CharDataModule, "--data.init_args.")):
        for name in inspect.signature(cls.__init__).parameters:
            if name != "self":
                assert f"{prefix}{name} " in out, f"{prefix}{name} missing from fit --help"
    for field in EngineOptions.__dataclass_fields__:
        assert f"--engine.{field} " in out
    assert "--model.init_args.activation str  = 'gelu' (preset; default 'gelu_tanh')" in out  # the preset's value
    assert "--data.init_args.max_chars int | None  = 300000 (preset" in out
    assert "peak learning rate of AdamW" in out  # descriptions come from the docstrings, also inherited ones
    assert "--data CharDataModule, PointerDataModule, SymbolFramesDataModule" in out


def test_fit_help_follows_the_chosen_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", "pointer-hull-quick", "-h"]) == 0
    out = capsys.readouterr().out
    assert "usage: attnbook validate --config pointer-hull-quick" in out
    assert "Model: attnbook.train.PointerModule" in out and "--model.init_args.hidden_dim int" in out
    assert "Data: attnbook.train.PointerDataModule" in out and "--data.init_args.num_points int" in out
    assert main(["fit", "--config", "no-such-preset", "--help"]) == 2  # a wrong preset is still an error
    assert "no-such-preset" in capsys.readouterr().err


def test_help_all_lists_the_attnbook_datamodules_as_data_subclasses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--help-all"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    known = out.rsplit("--data CONFIG", 1)[1].split("known subclasses:", 1)[1][:400]
    assert "attnbook.train.CharDataModule" in known and "attnbook.train.PointerDataModule" in known


# ------------------------------------------------------------------------------------------------ data
def test_char_datamodule_plain_train_validation_split(tmp_path: Path) -> None:
    from attnbook.train import CharDataModule

    path = tmp_path / "corpus.txt"
    path.write_text("abcdefghij" * 300, encoding="utf-8")
    data = CharDataModule(corpus=str(path), block_size=8, batch_size=4, val_fraction=0.1, test_fraction=0.0)
    data.setup("fit")
    assert len(data.train_data.data) + len(data.val_data.data) == 3000  # nothing set aside for a test split
    assert len(data.val_data.data) == 300
    assert next(iter(data.val_dataloader()))[0].shape == (4, 8)
    assert next(iter(data.predict_dataloader()))[0].shape == (4, 8)  # predicts from the validation split
    with pytest.raises(ValueError, match="test_fraction=0"):
        data.test_dataloader()
    with pytest.raises(ValueError, match="test_fraction"):
        CharDataModule(corpus=str(path), test_fraction=-0.1)
    with pytest.raises(ValueError, match="val_fraction"):
        CharDataModule(corpus=str(path), val_fraction=0.0)


# ------------------------------------------------------------------------------------------------ model
def test_model_summary_counts_the_gpts_flops() -> None:
    from lightning.pytorch.utilities.model_summary import ModelSummary

    from attnbook.train import GPTModule

    module = GPTModule(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)
    summary = ModelSummary(module)
    forward = module.gpt.flops_per_token(training=False) * 16  # one forward of a block_size sequence
    attention = 2 * 4 * 16 * 32 * 16  # n_layer * 4 T E per token * T tokens: q k^T and weights v
    # PyTorch's FLOP counter has no formula for the fused CPU attention kernel (it counts it on GPUs): the
    # summary holds every projection and the head, and the attention products where the counter knows them.
    assert forward - attention <= summary.total_flops <= forward
    assert summary.total_flops > 0


def test_exact_gelu_option_and_its_validation() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    mlp = MLP(16, activation="gelu")
    torch.testing.assert_close(mlp(x), mlp.proj(F.gelu(mlp.fc(x))))
    default = MLP(16)
    torch.testing.assert_close(default(x), default.proj(F.gelu(default.fc(x), approximate="tanh")))
    assert GPT(GPTConfig(vocab_size=11, activation="gelu")).decoder.blocks[0].mlp.approximate == "none"
    with pytest.raises(ValueError, match="activation"):
        GPTConfig(vocab_size=11, activation="relu")


@pytest.mark.parametrize("n_kv_head", [None, 1])
def test_one_gemm_qkv_projection_matches_the_three_projections(n_kv_head: int | None) -> None:
    torch.manual_seed(0)
    attn = CausalSelfAttention(32, 4, n_kv_head=n_kv_head)
    x = torch.randn(3, 7, 32, requires_grad=True)
    q, k, v = attn.project_qkv(x)
    mha = attn.mha
    torch.testing.assert_close(q, mha.q_proj(x))
    torch.testing.assert_close(k, mha.k_proj(x))
    torch.testing.assert_close(v, mha.v_proj(x))
    (q.sum() + 2 * k.sum() + 3 * v.sum()).backward()
    expected = x.detach().reshape(-1, 32).sum(0)
    torch.testing.assert_close(mha.k_proj.weight.grad, 2 * expected.expand_as(mha.k_proj.weight))
    torch.testing.assert_close(mha.v_proj.bias.grad, torch.full_like(mha.v_proj.bias, 3.0 * 21))
    assert set(attn.state_dict()) >= {"mha.q_proj.weight", "mha.k_proj.weight", "mha.v_proj.weight"}


# ------------------------------------------------------------------------------------------------ engine
def test_only_last_checkpoint_carries_optimizer_state_and_best_still_evaluates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200, encoding="utf-8")
    common = [
        "--config", "gpt-quick", "--data.init_args.corpus", str(corpus), "--data.init_args.block_size", "16",
        "--data.init_args.batch_size", "4", "--data.init_args.batches_per_epoch", "3",
        "--data.init_args.val_batches", "1", "--model.init_args.block_size", "16", "--model.init_args.n_layer", "1",
        "--model.init_args.n_embd", "32", "--model.init_args.n_head", "2", "--engine.run_dir", str(tmp_path / "run"),
        "--engine.progress_bar", "false", "--engine.loggers", "[csv]", "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    assert main(["fit", *common, "--trainer.max_epochs", "2", "--engine.save_every_n_epochs", "1"]) == 0
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "epoch=000.ckpt", "epoch=001.ckpt", "last.ckpt"]
    last = torch.load(folder / "last.ckpt", weights_only=False)
    assert last["epoch"] == 1 and last["global_step"] == 6  # written at every epoch's end
    weights = sum(t.numel() * t.element_size() for t in last["state_dict"].values())
    assert "optimizer_states" in last and "lr_schedulers" in last  # resumable
    for name in ("best.ckpt", "epoch=001.ckpt"):
        state = torch.load(folder / name, weights_only=False)
        assert "optimizer_states" not in state and "attnbook" in state  # loadable on its own, tokenizer included
        assert (folder / name).stat().st_size < 1.5 * weights < (folder / "last.ckpt").stat().st_size / 2
    capsys.readouterr()
    assert main(["validate", *common, "--ckpt_path", "best"]) == 0  # weights-only checkpoints evaluate
    assert main(["fit", *common, "--trainer.max_epochs", "3", "--ckpt_path", "last"]) == 0  # and last resumes


def test_progress_bar_shows_tokens_per_second_and_ms_per_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning.pytorch as pl

    import attnbook.train.engine

    monkeypatch.setattr(attnbook.train.engine, "_in_notebook", lambda: True)  # the interactive bar (a log gets lines)

    from attnbook.train import CharDataModule, EngineOptions, GPTModule, ThroughputProgressBar, trainer_kwargs

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200, encoding="utf-8")
    data = CharDataModule(corpus=str(corpus), block_size=8, batch_size=4, batches_per_epoch=5, val_batches=1)
    module = GPTModule(block_size=8, n_layer=1, n_head=2, n_embd=16)
    seen: list[dict] = []

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            bar = trainer.progress_bar_callback
            seen.append(bar.get_metrics(trainer, pl_module))

    engine = EngineOptions(run_dir=str(tmp_path / "run"), loggers=["csv"])
    options = {"accelerator": "cpu", "max_epochs": 1, "enable_model_summary": False, "callbacks": [Spy()]}
    trainer = pl.Trainer(**trainer_kwargs(engine, **options))
    assert isinstance(trainer.progress_bar_callback, ThroughputProgressBar)
    trainer.fit(module, datamodule=data)
    last = seen[-1]
    assert float(last["ms/step"]) > 0 and float(last["tok/s"]) > 0
    # ms/step is shown to 0.1 ms and tok/s to 1 token: tok/s must lie within what that rounding allows
    ms, tok_s = float(last["ms/step"]), float(last["tok/s"])
    assert 4 * 8 / ((ms + 0.05) / 1000) - 0.5 <= tok_s <= 4 * 8 / ((ms - 0.05) / 1000) + 0.5
    from attnbook.train.curves import read_metrics

    assert read_metrics(tmp_path / "run")["perf/ms_per_step"][0][1] > 0  # and once per epoch in metrics.csv


def test_adamw_takes_the_fused_kernel_on_the_cpu_where_pytorch_has_one() -> None:
    from attnbook.train import GPTModule
    from attnbook.train.modules import fused_adamw_available

    module = GPTModule(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32, lr_decay_steps=10)
    optimizer = module.configure_optimizers()["optimizer"]
    major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    assert fused_adamw_available("cpu") is ((major, minor) >= (2, 4))
    assert fused_adamw_available("cuda") and not fused_adamw_available("meta")
    assert optimizer.defaults["fused"] is fused_adamw_available("cpu")
    # the fused kernel computes AdamW: one step of each on the same weights and gradients agrees closely
    params = [torch.randn(8, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    grads = [torch.randn_like(p) for p in params]
    updated = []
    for fused in (False, fused_adamw_available("cpu")):
        copies = [p.clone().requires_grad_() for p in params]
        for c, g in zip(copies, grads, strict=True):
            c.grad = g.clone()
        opt = torch.optim.AdamW(copies, lr=1e-2, weight_decay=0.1, fused=fused)
        for _ in range(3):
            opt.step()
        updated.append([c.detach() for c in copies])
    for a, b in zip(*updated, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_the_quick_preset_ships_the_recipe_its_search_chose() -> None:
    """``gpt-quick``'s defaults are the recipe ``benchmarks/tune_quick.py`` measured fastest to its target."""
    import importlib.util

    import yaml

    from attnbook.train.presets import resolve_config

    spec = importlib.util.spec_from_file_location("tune_quick", REPO / "benchmarks" / "tune_quick.py")
    assert spec is not None and spec.loader is not None
    sys.path.insert(0, str(REPO / "benchmarks"))  # tune_quick imports its neighbour time_to_quality
    try:
        tune_quick = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tune_quick)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    preset = yaml.safe_load(resolve_config("gpt-quick").read_text())
    model, data = preset["model"]["init_args"], preset["data"]["init_args"]
    shipped = {
        "lr": model["lr"],
        "warmup_steps": model["warmup_steps"],
        "max_epochs": preset["trainer"]["max_epochs"],
        "batch_size": data["batch_size"],
        "shape": (model["n_layer"], model["n_embd"], model["n_head"]),
    }
    assert shipped == tune_quick.CHOSEN
    assert tune_quick.CHOSEN != tune_quick.START  # the search moved the preset from where it started
    # the chosen recipe is one the search tried (its grid holds every value)
    assert all(value in tune_quick.GRID[knob] for knob, value in tune_quick.CHOSEN.items())

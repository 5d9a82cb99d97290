"""LightningModules for the book's models: one shared training recipe, one small class per model.

:class:`BookModule` holds what every run shares:

* **AdamW** (Decoupled Weight Decay Regularization 2019, ``loshchilov2019decoupled``) with weight decay on the
  matrices only (biases, norms and other vectors are not decayed), with PyTorch's fused kernel on CUDA and, from
  PyTorch 2.4, on the CPU (:func:`fused_adamw_available`), except under mixed precision (Lightning cannot clip a
  fused optimizer's gradients there);
* the **warm-up + cosine** schedule of :mod:`attnbook.train.schedule`, stepped per optimizer step, over
  ``lr_decay_steps`` steps or, by default, the trainer's whole run (gradient accumulation included);
* a **finite-loss guard**: a NaN or infinite training loss raises :class:`NonFiniteLossError` naming the step
  before the optimizer can apply it, so the last checkpoint stays clean;
* optional **torch.compile** of the network (``nn.Module.compile``, in place, so checkpoints hold the plain
  parameter names and load without it);
* **per-epoch reseeding** of PyTorch's global generator (dropout) from ``(seed_everything's seed, epoch)``, so
  a run resumed from an end-of-epoch checkpoint continues bit-for-bit like the uninterrupted run;
* a **model spec** stored in every checkpoint (``checkpoint["attnbook"]``): the sizes a network takes from its
  data (vocabulary, frame width) and, for the GPT, the tokenizer. Networks whose sizes come from the data
  are built in ``setup`` from the datamodule, or in ``on_load_checkpoint`` from the stored spec, so
  ``GPTModule.load_from_checkpoint(path)`` works with no data at hand.

Subclasses say how to build the network (``make_net``), compute the loss (``compute_loss``) and count
tokens (``tokens_in_batch``, for throughput and MFU).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor, nn

from attnbook.train.callbacks import NonFiniteLossError
from attnbook.train.schedule import warmup_cosine_scheduler

__all__ = ["BookModule", "GPTModule", "PointerModule", "Seq2SeqModule", "ViTModule"]

_SEED_STRIDE = 1_000_003


def fused_adamw_available(device: torch.device | str) -> bool:
    """Whether ``torch.optim.AdamW(fused=True)`` runs on ``device``: CUDA, and the CPU from PyTorch 2.4.

    On the CPU the fused kernel updates all parameters in one pass; for the book's character GPT (68 parameter
    tensors, 0.8 M numbers) an AdamW step takes about a quarter of the default for-loop implementation's time
    (``benchmarks/train_overhead.py`` measures what that does to a whole training step).
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    if kind != "cpu":
        return False
    major, minor = (int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    return (major, minor) >= (2, 4)


class BookModule(pl.LightningModule):
    """The shared training recipe (see the module docstring). Optimisation arguments of every subclass:

    Args:
        lr: peak learning rate of AdamW.
        weight_decay: decoupled weight decay on matrices.
        betas: AdamW's ``(beta1, beta2)``.
        warmup_steps: optimizer steps of linear warm-up.
        min_lr_ratio: the cosine floor as a fraction of ``lr``.
        lr_decay_steps: length of the schedule in optimizer steps (``None``: the whole run).
        compile: run the network's forward through ``torch.compile`` (worth it on a GPU for long runs).
    """

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: Sequence[float] = (0.9, 0.95),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        lr_decay_steps: int | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {tuple(betas)!r}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
        if lr_decay_steps is not None and (not isinstance(lr_decay_steps, int) or lr_decay_steps <= 0):
            raise ValueError(f"lr_decay_steps must be a positive int or None, got {lr_decay_steps!r}")
        self.lr, self.weight_decay, self.betas = float(lr), float(weight_decay), (float(betas[0]), float(betas[1]))
        self.warmup_steps, self.min_lr_ratio, self.lr_decay_steps = warmup_steps, float(min_lr_ratio), lr_decay_steps
        self.compile = bool(compile)
        self.net: nn.Module | None = None
        self.spec: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------ subclass API
    def spec_from_data(self, datamodule: pl.LightningDataModule | None) -> dict[str, Any]:
        """The sizes the network takes from the data (checked against, or filling, ``self.spec``)."""
        return {}

    def make_net(self, spec: dict[str, Any]) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute_loss(self, batch: Any) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def tokens_in_batch(self, batch: Any) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def eval_metrics(self, batch: Any) -> dict[str, float | Tensor]:
        """Extra validation/test metrics of one batch (beside the loss)."""
        return {}

    def extra_checkpoint_state(self) -> dict[str, Any]:
        return {}

    def load_extra_checkpoint_state(self, state: dict[str, Any]) -> None:
        return None

    # ------------------------------------------------------------------------------------------ building
    def _spec_complete(self, spec: dict[str, Any]) -> bool:
        return all(value is not None for value in spec.values())

    def _build(self, spec: dict[str, Any]) -> None:
        self.spec = dict(spec)
        self.net = self.make_net(self.spec)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        from_data = self.spec_from_data(datamodule)
        for key, value in from_data.items():
            mine = self.spec.get(key)
            if mine is not None and value is not None and mine != value:
                raise ValueError(f"model.{key}={mine} does not match the data's {key}={value}")
        if self.net is None:
            merged = {**self.spec, **{k: v for k, v in from_data.items() if v is not None}}
            if not self._spec_complete(merged):
                missing = sorted(k for k, v in merged.items() if v is None)
                raise ValueError(
                    f"{type(self).__name__} needs {', '.join('model.' + m for m in missing)}: set it, or train with "
                    "a datamodule that provides it"
                )
            self._build(merged)

    def configure_model(self) -> None:
        if self.compile and self.net is not None and getattr(self.net, "_compiled_call_impl", None) is None:
            self.net.compile()  # compiles the module's __call__ in place: the state_dict keeps its plain names

    def run_net(self, *args: Any, **kwargs: Any) -> Any:
        """Call the network (compiled when ``compile=True``)."""
        if self.net is None:
            raise RuntimeError(
                f"{type(self).__name__} has no network yet: call trainer.fit/validate or load a checkpoint"
            )
        return self.net(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The network's forward (what Lightning's model summary runs on ``example_input_array`` to count FLOPs)."""
        return self.run_net(*args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["attnbook"] = {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "spec": dict(self.spec),
            **self.extra_checkpoint_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("attnbook")
        if state is None:
            raise ValueError("this checkpoint was not written by attnbook.train (it has no 'attnbook' entry)")
        if self.net is None:
            self._build(state["spec"])
        self.load_extra_checkpoint_state(state)

    # ------------------------------------------------------------------------------------------ steps
    def on_train_epoch_start(self) -> None:
        seed = int(os.environ.get("PL_GLOBAL_SEED", "0"))
        torch.manual_seed(seed * _SEED_STRIDE + self.current_epoch)
        self._epoch_loss_sum, self._epoch_loss_count = torch.zeros((), device=self.device), 0

    def _log_epoch_train_loss(self) -> None:
        count = getattr(self, "_epoch_loss_count", 0)
        if count:
            mean = self._epoch_loss_sum / count
            self.log("train/loss_epoch", mean, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)
            self._epoch_loss_count = 0

    def on_validation_epoch_end(self) -> None:
        # Logged here, not at the epoch's very end: validation metrics reach the loggers before the end-of-epoch
        # checkpoint is written, so a run killed right after that checkpoint has the epoch's whole log on disk.
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self._log_epoch_train_loss()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_train_loss()  # runs without validation

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self.compute_loss(batch)
        if not bool(torch.isfinite(loss.detach())):
            raise NonFiniteLossError(
                f"the training loss became {float(loss.detach())} at step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); the run was stopped before applying it. "
                "Try a lower model.lr, more model.warmup_steps, or trainer.gradient_clip_val."
            )
        if self._step_is_logged():
            self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=1)
        self._epoch_loss_sum = self._epoch_loss_sum + loss.detach()
        self._epoch_loss_count += 1
        return loss

    def _step_is_logged(self) -> bool:
        """Whether the trainer writes this step's metrics (every ``log_every_n_steps``). ``self.log`` costs about a
        millisecond per call, 3-10% of a small model's CPU step, so the per-step loss is logged only when kept."""
        connector = getattr(self.trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    def _evaluate(self, batch: Any, split: str) -> Tensor:
        loss = self.compute_loss(batch)
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=1, sync_dist=True)
        for name, value in self.eval_metrics(batch).items():
            self.log(f"{split}/{name}", value, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test")

    # ------------------------------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> dict[str, Any]:
        decay = [p for p in self.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.ndim < 2]
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        # Lightning's mixed precision (16-mixed, bf16-mixed) cannot clip the gradients of a fused optimizer (it
        # unscales them inside its step): there, AdamW's for-loop implementation.
        mixed = self._trainer is not None and isinstance(self.trainer.precision_plugin, MixedPrecision)
        fused = fused_adamw_available(self.device) and not mixed
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, fused=fused)
        total = self.lr_decay_steps or self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("set trainer.max_steps or trainer.max_epochs (or model.lr_decay_steps) for the schedule")
        scheduler = warmup_cosine_scheduler(optimizer, self.warmup_steps, int(total), self.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class GPTModule(BookModule):
    """The character GPT of chapter 06 (:class:`attnbook.models.gpt.GPT`) as a LightningModule.

    Batches are ``(x (B, T), y (B, T))`` long windows with ``y[t] = x[t + 1]``. Logs ``loss`` and ``bpc``
    (bits per character, ``loss / ln 2``). ``vocab_size=None`` takes the vocabulary of the datamodule's
    tokenizer; the tokenizer is saved in every checkpoint, so :meth:`complete` and ``attnbook generate`` can
    decode. ``predict`` continues the first ``prompt_length`` characters of each window by
    ``max_new_tokens`` sampled characters.

    Args:
        vocab_size, block_size, n_layer, n_head, n_embd, dropout, bias, attn_backend, activation, attn_window: the
            :class:`~attnbook.models.gpt.GPTConfig` (``attn_backend="auto"`` takes the fused kernel;
            ``activation="gelu"`` the exact GELU, faster on a CPU than GPT-2's tanh approximation).
        prompt_length, max_new_tokens, temperature, top_k: sampling in ``predict``.
        lr, weight_decay, betas, warmup_steps, min_lr_ratio, lr_decay_steps, compile: see :class:`BookModule`.
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        block_size: int = 64,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        bias: bool = True,
        attn_backend: str = "auto",
        activation: str = "gelu_tanh",
        attn_window: int | None = None,
        prompt_length: int = 16,
        max_new_tokens: int = 100,
        temperature: float = 0.8,
        top_k: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: Sequence[float] = (0.9, 0.95),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        lr_decay_steps: int | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__(lr, weight_decay, betas, warmup_steps, min_lr_ratio, lr_decay_steps, compile)
        self.save_hyperparameters()
        self.config_kwargs = {
            "block_size": block_size,
            "n_layer": n_layer,
            "n_head": n_head,
            "n_embd": n_embd,
            "dropout": dropout,
            "bias": bias,
            "attn_backend": attn_backend,
            "activation": activation,
            "attn_window": attn_window,
        }
        from attnbook.models.gpt import GPTConfig

        GPTConfig(vocab_size=vocab_size or 1, **self.config_kwargs)  # validate the sizes now, not after data loads
        self.tokenizer: Any = None
        self.spec = {"vocab_size": vocab_size}
        if vocab_size is not None:
            self._build(self.spec)

    def spec_from_data(self, datamodule: pl.LightningDataModule | None) -> dict[str, Any]:
        tokenizer = getattr(datamodule, "tokenizer", None)
        if datamodule is not None and tokenizer is None and hasattr(datamodule, "setup"):
            datamodule.setup("fit")
            tokenizer = getattr(datamodule, "tokenizer", None)
        block = getattr(datamodule, "block_size", None)
        if block is not None and block > self.config_kwargs["block_size"]:
            raise ValueError(
                f"data.block_size={block} exceeds model.block_size={self.config_kwargs['block_size']} "
                "(the GPT has no positions beyond it)"
            )
        if tokenizer is None:
            return {}
        if self.tokenizer is None:
            self.tokenizer = tokenizer
        return {"vocab_size": int(tokenizer.vocab_size)}

    def make_net(self, spec: dict[str, Any]) -> nn.Module:
        from attnbook.models.gpt import GPT, GPTConfig

        # The model summary's FLOPs: one forward pass of a full-length sequence (zero without an example input).
        self.example_input_array = torch.zeros((1, self.config_kwargs["block_size"]), dtype=torch.long)
        return GPT(GPTConfig(vocab_size=int(spec["vocab_size"]), **self.config_kwargs))

    @property
    def gpt(self) -> Any:
        if self.net is None:
            raise RuntimeError("the GPT is built after setup (it takes vocab_size from the data) or when loaded")
        return self.net

    def compute_loss(self, batch: Any) -> Tensor:
        x, y = batch
        _, loss = self.run_net(x, y)
        return loss

    def _evaluate(self, batch: Any, split: str) -> Tensor:
        loss = super()._evaluate(batch, split)
        self.log(f"{split}/bpc", loss / math.log(2.0), on_step=False, on_epoch=True, batch_size=1, sync_dist=True)
        return loss

    def tokens_in_batch(self, batch: Any) -> int:
        return int(batch[0].numel())

    def train_flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), ``GPT.flops_per_token(training=True)``."""
        return float(self.gpt.flops_per_token(training=True))

    def extra_checkpoint_state(self) -> dict[str, Any]:
        if self.tokenizer is None:
            return {}
        return {"tokenizer": self.tokenizer.state_dict(), "tokenizer_class": type(self.tokenizer).__name__}

    def load_extra_checkpoint_state(self, state: dict[str, Any]) -> None:
        if "tokenizer" in state and self.tokenizer is None:
            from attnbook.data.text import CharTokenizer

            self.tokenizer = CharTokenizer.from_state_dict(state["tokenizer"])

    def complete(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> str:
        """Continue ``prompt`` (a string) by ``max_new_tokens`` sampled characters; returns prompt + continuation."""
        if self.tokenizer is None:
            raise ValueError("this GPTModule has no tokenizer (train it on a CharDataModule, or load a checkpoint)")
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        idx = self.tokenizer.encode(prompt)[None].to(self.device)  # (1, T)
        out = self.gpt.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
        return self.tokenizer.decode(out[0].cpu())

    def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, str]]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        prompts = x[:, : self.hparams.prompt_length]  # (B, P)
        out = self.gpt.generate(
            prompts, self.hparams.max_new_tokens, temperature=self.hparams.temperature, top_k=self.hparams.top_k
        )  # (B, P + new)
        decode = self.tokenizer.decode if self.tokenizer is not None else (lambda ids: str(ids.tolist()))
        return [
            {"prompt": decode(row[: prompts.shape[1]].cpu()), "completion": decode(row[prompts.shape[1] :].cpu())}
            for row in out
        ]


class PointerModule(BookModule):
    """The Pointer Network of chapter 02 (:class:`attnbook.models.pointer.PointerNetwork`) as a LightningModule.

    Batches are ``(inputs (B, n, d), targets (B, m), lengths (B,))``. Validation and test log the teacher-forced
    ``loss``, the greedy decoder's exact-sequence accuracy ``seq_acc`` and, for convex hulls, ``coverage`` (area
    of the decoded polygon over the true hull's, 0 for an invalid polygon).

    Args:
        input_dim, hidden_dim, end_token, min_outputs: the ``PointerNetwork`` (2 and ``end_token=True`` for hulls,
            1 and ``False`` for sorting; checked against the datamodule).
        lr, weight_decay, betas, warmup_steps, min_lr_ratio, lr_decay_steps, compile: see :class:`BookModule`.
    """

    def __init__(
        self,
        input_dim: int = 2,
        hidden_dim: int = 128,
        end_token: bool = True,
        min_outputs: int = 3,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: Sequence[float] = (0.9, 0.999),
        warmup_steps: int = 50,
        min_lr_ratio: float = 0.1,
        lr_decay_steps: int | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__(lr, weight_decay, betas, warmup_steps, min_lr_ratio, lr_decay_steps, compile)
        self.save_hyperparameters()
        self.net_kwargs = {"hidden_dim": hidden_dim, "min_outputs": min_outputs}
        self._build({"input_dim": input_dim, "end_token": bool(end_token)})

    def spec_from_data(self, datamodule: pl.LightningDataModule | None) -> dict[str, Any]:
        if datamodule is None or not hasattr(datamodule, "input_dim"):
            return {}
        return {"input_dim": int(datamodule.input_dim), "end_token": bool(datamodule.end_token)}

    def make_net(self, spec: dict[str, Any]) -> nn.Module:
        from attnbook.models.pointer import PointerNetwork

        return PointerNetwork(input_dim=spec["input_dim"], end_token=spec["end_token"], **self.net_kwargs)

    def compute_loss(self, batch: Any) -> Tensor:
        inputs, targets, lengths = batch
        log_probs = self.run_net(inputs, targets, lengths)  # (B, m, n + end_token)
        return self.net.loss(log_probs, targets)

    def tokens_in_batch(self, batch: Any) -> int:
        return int((batch[1] != -100).sum())

    @staticmethod
    def _as_indices(sequences: Tensor, n: int, width: int) -> Tensor:
        """Input indices of each row, ``-1`` from the end symbol / padding on, padded to ``width`` columns."""
        cleaned = torch.where((sequences >= 0) & (sequences < n), sequences, torch.full_like(sequences, -1))
        ended = (cleaned < 0).cumsum(dim=1) > 0  # (B, m): at or after the first non-index
        cleaned = cleaned.masked_fill(ended, -1)
        pad = width - cleaned.shape[1]
        return torch.nn.functional.pad(cleaned, (0, pad), value=-1) if pad > 0 else cleaned

    def eval_metrics(self, batch: Any) -> dict[str, float | Tensor]:
        inputs, targets, lengths = batch
        n = inputs.shape[1]
        decoded = self.net.decode(inputs, lengths)  # (B, n + end_token)
        width = max(decoded.shape[1], targets.shape[1])
        pred, true = self._as_indices(decoded, n, width), self._as_indices(targets, n, width)
        metrics: dict[str, float | Tensor] = {"seq_acc": (pred == true).all(dim=1).float().mean()}
        if self.spec.get("end_token") and inputs.shape[-1] == 2:
            from attnbook.data.pointer import hull_coverage

            points, pred_cpu, true_cpu = inputs.cpu(), pred.cpu(), true.cpu()
            coverages = [hull_coverage(pred_cpu[b], points[b], true_cpu[b]) for b in range(len(points))]
            metrics["coverage"] = sum(coverages) / len(coverages)
        return metrics

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        inputs, targets, lengths = batch
        return {"inputs": inputs, "targets": targets, "predicted": self.net.decode(inputs, lengths)}


class Seq2SeqModule(BookModule):
    """The chapter 04 encoder-decoder (:class:`attnbook.models.transformer.EncoderDecoder`), symbols -> frames.

    Batches are the dicts of :meth:`attnbook.data.seq2seq.SymbolFramesTask.sample`. The loss is the model's
    (frame MSE + stop-token BCE); validation also logs ``length_acc``, the fraction of sequences whose greedy
    generation stops at the true number of frames. ``vocab_size``/``frame_dim`` default to the datamodule's.

    Args:
        vocab_size, frame_dim, d_model, num_heads, num_encoder_layers, num_decoder_layers, dim_feedforward,
            dropout, prenet_dropout, norm_first, max_len, stop_pos_weight: the ``EncoderDecoder``.
        lr, weight_decay, betas, warmup_steps, min_lr_ratio, lr_decay_steps, compile: see :class:`BookModule`.
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        frame_dim: int | None = None,
        d_model: int = 64,
        num_heads: int = 4,
        num_encoder_layers: int = 2,
        num_decoder_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.0,
        prenet_dropout: float = 0.2,
        norm_first: bool = True,
        max_len: int = 512,
        stop_pos_weight: float = 5.0,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: Sequence[float] = (0.9, 0.98),
        warmup_steps: int = 50,
        min_lr_ratio: float = 0.1,
        lr_decay_steps: int | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__(lr, weight_decay, betas, warmup_steps, min_lr_ratio, lr_decay_steps, compile)
        self.save_hyperparameters()
        self.net_kwargs = {
            "d_model": d_model,
            "num_heads": num_heads,
            "num_encoder_layers": num_encoder_layers,
            "num_decoder_layers": num_decoder_layers,
            "dim_feedforward": dim_feedforward,
            "dropout": dropout,
            "prenet_dropout": prenet_dropout,
            "norm_first": norm_first,
            "max_len": max_len,
            "stop_pos_weight": stop_pos_weight,
        }
        if d_model % num_heads:
            raise ValueError(f"model.num_heads={num_heads} must divide model.d_model={d_model}")
        self.spec = {"vocab_size": vocab_size, "frame_dim": frame_dim}
        if self._spec_complete(self.spec):
            self._build(self.spec)

    def spec_from_data(self, datamodule: pl.LightningDataModule | None) -> dict[str, Any]:
        if datamodule is None or not hasattr(datamodule, "frame_dim"):
            return {}
        return {"vocab_size": int(datamodule.vocab_size), "frame_dim": int(datamodule.frame_dim)}

    def make_net(self, spec: dict[str, Any]) -> nn.Module:
        from attnbook.models.transformer import EncoderDecoder

        return EncoderDecoder(int(spec["vocab_size"]), int(spec["frame_dim"]), **self.net_kwargs)

    def compute_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return self.net.loss(**batch)  # calls the network's (compiled, if asked) __call__

    def tokens_in_batch(self, batch: dict[str, Tensor]) -> int:
        return int(batch["frame_mask"].sum())

    def eval_metrics(self, batch: dict[str, Tensor]) -> dict[str, float | Tensor]:
        true_lengths = batch["frame_mask"].sum(dim=1)  # (B,)
        max_frames = min(int(true_lengths.max()) + 4, self.net.max_len)
        _, lengths, _ = self.net.generate(batch["symbols"], symbol_mask=batch["symbol_mask"], max_frames=max_frames)
        return {"length_acc": (lengths == true_lengths).float().mean()}

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        frames, lengths, _ = self.net.generate(batch["symbols"], symbol_mask=batch["symbol_mask"])
        return {
            "symbols": batch["symbols"],
            "frames": frames,
            "lengths": lengths,
            "true_lengths": batch["frame_mask"].sum(1),
        }


class ViTModule(BookModule):
    """The Vision Transformer of chapter 13 (:class:`attnbook.models.vit.ViT`) as an image classifier.

    Batches are ``(images (B, C, H, W), labels (B,))`` (:class:`attnbook.train.ImageDataModule`). Training batches
    are augmented here (random shifts of up to ``augment_padding`` pixels and, if ``augment_flip``, left-right
    mirroring: :func:`attnbook.data.images.random_crop_flip`) from PyTorch's global generator, which the recipe
    reseeds every epoch. The loss is cross-entropy with ``label_smoothing``; evaluation also logs ``acc``. Image
    size, channels and classes default to the datamodule's.

    Args:
        image_size, in_channels, num_classes: the data's (``None``: from the datamodule).
        patch_size, dim, depth, num_heads, mlp_ratio, dropout, pool: the ``ViT``.
        label_smoothing, augment_padding, augment_flip: the training objective and augmentation.
        lr, weight_decay, betas, warmup_steps, min_lr_ratio, lr_decay_steps, compile: see :class:`BookModule`.
    """

    def __init__(
        self,
        image_size: int | None = None,
        in_channels: int | None = None,
        num_classes: int | None = None,
        patch_size: int = 2,
        dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        pool: str = "cls",
        label_smoothing: float = 0.0,
        augment_padding: int = 0,
        augment_flip: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: Sequence[float] = (0.9, 0.999),
        warmup_steps: int = 50,
        min_lr_ratio: float = 0.01,
        lr_decay_steps: int | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__(lr, weight_decay, betas, warmup_steps, min_lr_ratio, lr_decay_steps, compile)
        self.save_hyperparameters()
        if dim % num_heads:
            raise ValueError(f"model.num_heads={num_heads} must divide model.dim={dim}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"model.label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if isinstance(augment_padding, bool) or not isinstance(augment_padding, int) or augment_padding < 0:
            raise ValueError(f"model.augment_padding must be a non-negative int, got {augment_padding!r}")
        self.net_kwargs = {
            "patch_size": patch_size,
            "dim": dim,
            "depth": depth,
            "num_heads": num_heads,
            "mlp_ratio": mlp_ratio,
            "dropout": dropout,
            "pool": pool,
        }
        self.label_smoothing, self.augment_padding, self.augment_flip = label_smoothing, augment_padding, augment_flip
        self.spec = {"image_size": image_size, "in_channels": in_channels, "num_classes": num_classes}
        if self._spec_complete(self.spec):
            self._build(self.spec)

    def spec_from_data(self, datamodule: pl.LightningDataModule | None) -> dict[str, Any]:
        if datamodule is None or not hasattr(datamodule, "dataset"):
            return {}
        datamodule.setup("fit")
        return {
            "image_size": int(datamodule.image_size),
            "in_channels": int(datamodule.in_channels),
            "num_classes": int(datamodule.num_classes),
        }

    def make_net(self, spec: dict[str, Any]) -> nn.Module:
        from attnbook.models.vit import ViT

        return ViT(int(spec["image_size"]), in_channels=int(spec["in_channels"]),
                   num_classes=int(spec["num_classes"]), **self.net_kwargs)  # fmt: skip

    def compute_loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, labels = batch
        if self.training and (self.augment_padding or self.augment_flip):
            from attnbook.data.images import random_crop_flip

            images = random_crop_flip(images, self.augment_padding, flip=self.augment_flip)
        logits = self.run_net(images)  # (B, classes)
        return torch.nn.functional.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def tokens_in_batch(self, batch: tuple[Tensor, Tensor]) -> int:
        return int(batch[0].shape[0]) * (self.net.num_patches + 1)

    def train_flops_per_token(self) -> float:
        """Training FLOPs per token: 6 per parameter (forward and backward matmuls) plus the attention scores."""
        n = sum(p.numel() for name, p in self.net.named_parameters() if "pos_embed" not in name)
        depth, dim, tokens = self.net_kwargs["depth"], self.net_kwargs["dim"], self.net.num_patches + 1
        return 6.0 * n + 12.0 * depth * dim * tokens

    def _evaluate(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        images, labels = batch
        logits = self.run_net(images)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        size = int(labels.shape[0])  # weight by batch size: the last batch may be smaller
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)
        acc = (logits.argmax(-1) == labels).float().mean()
        self.log(f"{split}/acc", acc, on_step=False, on_epoch=True, prog_bar=split == "val", batch_size=size,
                 sync_dist=True)  # fmt: skip
        return loss

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        images, labels = batch
        return {"labels": labels, "predicted": self.run_net(images).argmax(-1)}

"""The training engine: the Trainer attnbook builds, its LightningCLI, the presets, and ``fit_or_load``.

One engine serves the ``attnbook`` command and the chapters, so the two can never diverge: the command line
(:class:`AttnbookCLI`, a ``LightningCLI``) and :func:`fit_or_load` parse the same YAML presets with the same
parser and build the same Trainer.

**A run folder** (``engine.run_dir``) holds everything of one run::

    run_dir/metrics.csv, hparams.yaml     CSV log (one row per logged step / epoch)
    run_dir/tensorboard/                  TensorBoard events (tensorboard --logdir run_dir)
    run_dir/config.yaml                   the full resolved configuration
    run_dir/cache_key.json                what the checkpoint depends on (written by fit_or_load only)
    run_dir/run.lock                      held while a run writes the folder (attnbook.train.lock.RunLock)
    run_dir/validate/, test/, predict/    an evaluation's own log, config.yaml (and predictions.pt)
    run_dir/checkpoints/last.ckpt         written at the end of every epoch (resume: --ckpt_path last)
    run_dir/checkpoints/best.ckpt         the best epoch by engine.monitor (val/loss by default), weights only
    run_dir/checkpoints/epoch=NNN.ckpt    every engine.save_every_n_epochs epochs (0: none), weights only

A ``fit`` without ``--ckpt_path`` refuses a folder that already holds a run (``engine.overwrite: true`` starts
it over); ``--ckpt_path last`` resumes it and appends to its logs (dropping rows logged after that checkpoint).
One process writes a folder at a time (its lock); evaluation writes only to its subfolder and loading a finished
run writes nothing, so runs on read-only shares can be evaluated and loaded. Under data parallelism the
datamodules split each epoch across ranks themselves (``engine.lightning_distributed_sampler`` hands that back
to Lightning). Checkpoints are written atomically (:class:`~attnbook.train.checkpoint.AtomicCheckpointIO`). The engine
adds a learning-rate monitor, the throughput/MFU monitor (:class:`~attnbook.train.callbacks.ThroughputMonitor`,
``engine.peak_flops``) and a progress bar showing tokens/s and ms/step to whatever ``trainer.callbacks`` the
config lists. Everything else -- precision (``bf16-mixed``), gradient accumulation, clipping, devices, DDP/FSDP
strategies, multi-node -- is a plain ``trainer.*`` setting, handled by Lightning.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger

import attnbook.train.data  # noqa: F401  (defines the datamodules, so --help lists them as --data's subclasses)
from attnbook.train.callbacks import EpochProgressLines, ThroughputMonitor, ThroughputProgressBar
from attnbook.train.checkpoint import AtomicCheckpointIO, read_checkpoint
from attnbook.train.lock import RunLock
from attnbook.train.loggers import MetricsLogCursor, ResumableCSVLogger
from attnbook.train.modules import BookModule
from attnbook.train.presets import resolve_config

__all__ = [
    "EngineOptions",
    "trainer_kwargs",
    "clear_run_logs",
    "AttnbookCLI",
    "FitResult",
    "fit_or_load",
    "load_module",
    "code_fingerprint",
    "data_fingerprint",
    "RunInterrupted",
]

log = logging.getLogger(__name__)

_LOGGERS = ("csv", "tensorboard")
_SPECIAL_CKPT = ("last", "best", "hpc")
_EVALUATIONS = ("validate", "test", "predict")


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (``SIGINT``); the message says how to resume it."""


@dataclasses.dataclass
class EngineOptions:
    """What attnbook adds to a plain Lightning Trainer (the ``engine:`` section of a config).

    Args:
        run_dir: the run folder (logs, config, checkpoints; see the module docstring).
        loggers: any of ``"csv"``, ``"tensorboard"``; ``[]`` for none.
        save_every_n_epochs: also keep a checkpoint every this many epochs (0: only last and best).
        monitor: the metric that picks ``best.ckpt`` (``None``: no best checkpoint).
        monitor_mode: ``"min"`` or ``"max"``.
        peak_flops: peak FLOP/s of one device in the run's precision, for the MFU estimate (``None``: looked up
            for known GPUs, none on CPU; see :mod:`attnbook.train.callbacks`).
        progress_bar: show progress: a progress bar in a terminal or notebook, one line per epoch in a log file.
        progress_refresh_rate: redraw the bar every this many batches.
        lightning_distributed_sampler: let Lightning wrap the samplers in a ``DistributedSampler`` under data
            parallelism (this sets ``trainer.use_distributed_sampler``). Off by default: the datamodules of
            :mod:`attnbook.train.data` split an epoch's draws across ranks themselves and keep their per-epoch
            order, which Lightning's wrapper would freeze. Turn it on for datamodules of your own.
        overwrite: let ``fit`` without ``--ckpt_path`` start over in a run folder that already holds a run
            (its checkpoints and logs are deleted); otherwise that is an error, so a finished run is never
            overwritten by accident.
    """

    run_dir: str = "runs/attnbook"
    loggers: list[str] = dataclasses.field(default_factory=lambda: ["csv", "tensorboard"])
    save_every_n_epochs: int = 0
    monitor: str | None = "val/loss"
    monitor_mode: Literal["min", "max"] = "min"
    peak_flops: float | None = None
    progress_bar: bool = True
    progress_refresh_rate: int = 1
    lightning_distributed_sampler: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        unknown = [name for name in self.loggers if name not in _LOGGERS]
        if unknown:
            raise ValueError(f"engine.loggers: unknown logger(s) {unknown}; choose from {list(_LOGGERS)}")
        if self.save_every_n_epochs < 0:
            raise ValueError(f"engine.save_every_n_epochs must be >= 0, got {self.save_every_n_epochs}")
        if self.progress_refresh_rate < 1:
            raise ValueError(f"engine.progress_refresh_rate must be >= 1, got {self.progress_refresh_rate}")
        if self.peak_flops is not None and self.peak_flops <= 0:
            raise ValueError(f"engine.peak_flops must be positive or null, got {self.peak_flops}")

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.run_dir) / "checkpoints"


def clear_run_logs(run_dir: str | os.PathLike[str]) -> None:
    """Remove the logs of an earlier run from a run folder (``metrics.csv``, TensorBoard event files)."""
    folder = Path(run_dir)
    for old in [folder / "metrics.csv", *(folder / "tensorboard").glob("events.out.tfevents.*")]:
        if old.is_file():
            old.unlink()


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (its output is a live display, where a progress bar redraws)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and hasattr(shell, "kernel")


class _LastCheckpoint(ModelCheckpoint):
    """Writes ``last.ckpt`` (resumable) only; its own state key, distinct from the epoch snapshots' callback."""

    @property
    def state_key(self) -> str:
        return self._generate_state_key(role="last", every_n_epochs=self._every_n_epochs)


def trainer_kwargs(engine: EngineOptions, fresh_logs: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Trainer arguments: ``kwargs`` (the config's ``trainer:`` section) completed by the engine's options.

    Loggers are added unless ``logger`` is set (``False`` turns logging off); checkpoint callbacks unless
    ``enable_checkpointing=False``; the atomic checkpoint writer unless a ``CheckpointIO`` plugin is given.
    The CSV log is appended to (a resumed run keeps its history) unless ``fresh_logs``, which starts it anew
    and drops old TensorBoard event files.
    """
    out = dict(kwargs)
    callbacks = list(out.get("callbacks") or [])
    run_dir = Path(engine.run_dir)
    out["default_root_dir"] = str(run_dir)
    out["use_distributed_sampler"] = engine.lightning_distributed_sampler
    if out.get("logger") in (None, True):
        loggers: list[Any] = []
        if fresh_logs:
            clear_run_logs(run_dir)
        if "csv" in engine.loggers:
            loggers.append(ResumableCSVLogger(save_dir=str(run_dir), name="", version=""))
            callbacks.append(MetricsLogCursor(loggers[-1]))
        if "tensorboard" in engine.loggers:
            loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""))
        out["logger"] = loggers or False
    has_logger = bool(out["logger"])
    if out.get("enable_checkpointing") is not False:
        # Only last.ckpt carries what resuming needs (optimizer and schedule state, loops, callbacks): for AdamW
        # that is twice the weights again. best.ckpt and the epoch snapshots are for evaluating and sampling,
        # so they hold the weights (and the attnbook spec and tokenizer) only: a third of the size.
        if engine.monitor:
            callbacks.append(
                ModelCheckpoint(
                    dirpath=engine.checkpoint_dir,
                    filename="best",
                    monitor=engine.monitor,
                    mode=engine.monitor_mode,
                    save_top_k=1,
                    save_weights_only=True,
                    auto_insert_metric_name=False,
                    enable_version_counter=False,
                )
            )
        callbacks.append(
            _LastCheckpoint(
                dirpath=engine.checkpoint_dir,
                filename="last",  # the newest epoch, as "top 1" of no metric: written every epoch
                save_top_k=1,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            )
        )
        if engine.save_every_n_epochs:
            callbacks.append(
                ModelCheckpoint(
                    dirpath=engine.checkpoint_dir,
                    filename="epoch={epoch:03d}",
                    every_n_epochs=engine.save_every_n_epochs,
                    save_top_k=-1,
                    save_weights_only=True,
                    auto_insert_metric_name=False,
                    enable_version_counter=False,
                )
            )
    if has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
        callbacks.append(ThroughputMonitor(engine.peak_flops))
    if out.get("enable_progress_bar") is None:
        out["enable_progress_bar"] = engine.progress_bar
    if out["enable_progress_bar"]:  # a redrawn bar in a terminal or notebook; one line per epoch in a log file
        interactive = _in_notebook() or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
        callbacks.append(
            ThroughputProgressBar(refresh_rate=engine.progress_refresh_rate) if interactive else EpochProgressLines()
        )
    out["callbacks"] = callbacks
    plugins = out.get("plugins")
    plugins = [] if plugins is None else (list(plugins) if isinstance(plugins, (list, tuple)) else [plugins])
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    out["plugins"] = plugins
    return out


# ---------------------------------------------------------------------------------------------------- the CLI
class _SaveConfigOnceRestored(SaveConfigCallback):
    """Writes ``config.yaml`` when training starts, after the checkpoint it resumes from has loaded (Lightning's
    callback writes it before): a resume that fails -- a checkpoint of another model -- leaves the run's
    recorded configuration as it was."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().setup(trainer, pl_module, "fit")


class AttnbookCLI(LightningCLI):
    """``LightningCLI`` over :class:`~attnbook.train.modules.BookModule` subclasses and any LightningDataModule,
    with the ``engine:`` section of :class:`EngineOptions` and a seed of 0 by default.

    Beyond Lightning's: ``--ckpt_path`` must name an existing file, or ``last``/``best`` of the run folder (a
    missing one is an error, never random weights); ``fit`` holds the run folder's lock
    (:class:`~attnbook.train.lock.RunLock`) while it runs; ``validate``/``test``/``predict`` write their logs,
    configuration and predictions to ``run_dir/<command>/``, never over the training run's records, and nothing
    at all when the run folder is read-only; Ctrl-C raises :class:`RunInterrupted` saying how to resume."""

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", BookModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("datamodule_class", pl.LightningDataModule)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_callback", _SaveConfigOnceRestored)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("parser_kwargs", {"exit_on_error": False})
        self.predictions: list[Any] | None = None
        self.fresh_logs = bool(kwargs.pop("fresh_logs", False))
        self.evaluation_dir: Path | None = None
        self._lock: RunLock | None = None
        try:
            super().__init__(args=args, run=run, **kwargs)
        except SystemExit:  # Lightning turns Ctrl-C into exit code 1 after a graceful shutdown
            trainer = getattr(self, "trainer", None)
            if trainer is not None and trainer.interrupted:
                raise RunInterrupted(self._resume_advice()) from None
            raise
        finally:
            if self._lock is not None:
                self._lock.release()

    def _resume_advice(self) -> str:
        if self.subcommand != "fit":
            return f"{self.subcommand} interrupted"
        last = self.engine.checkpoint_dir / "last.ckpt"
        if not last.is_file():
            return "interrupted before the first checkpoint: there is nothing to resume; run the command again"
        return (
            f"interrupted; {str(last)!r} holds the last finished epoch: resume with the same command and "
            "--ckpt_path last"
        )

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_class_arguments(EngineOptions, "engine")

    def before_instantiate_classes(self) -> None:
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        ckpt_path = config.get("ckpt_path")
        checkpoints = Path(config.engine.run_dir) / "checkpoints"
        if ckpt_path in ("last", "best"):  # the run folder's file: a new process has no memory of the best epoch
            path = checkpoints / f"{ckpt_path}.ckpt"
            if not path.is_file():
                raise FileNotFoundError(
                    f"--ckpt_path {ckpt_path}: no {ckpt_path} checkpoint at {str(path)!r} "
                    "(is --engine.run_dir the folder of a trained run?)"
                )
            config.ckpt_path = ckpt_path = str(path)
        if ckpt_path and ckpt_path not in _SPECIAL_CKPT and not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"--ckpt_path: no checkpoint file at {ckpt_path!r}")
        if self.subcommand in _EVALUATIONS:
            self.evaluation_dir = _writable_folder(Path(config.engine.run_dir) / self.subcommand)
            if self.evaluation_dir is None:
                log.warning(
                    "%s is read-only: the %s results are shown, not saved", config.engine.run_dir, self.subcommand
                )
            return
        self._lock = RunLock(config.engine.run_dir).acquire()  # fit: the one writer of this folder
        self.fresh_logs = self.subcommand == "fit" and not ckpt_path
        if self.fresh_logs:
            if (checkpoints / "last.ckpt").is_file() and not config.engine.overwrite:
                raise FileExistsError(
                    f"engine.run_dir {config.engine.run_dir!r} already holds a run ({checkpoints / 'last.ckpt'}): "
                    "resume it with --ckpt_path last, start it over with --engine.overwrite true, or pick another "
                    "--engine.run_dir"
                )
            for stale in checkpoints.glob("*.ckpt"):
                stale.unlink()

    @property
    def engine(self) -> EngineOptions:
        return self._get(self.config_init, "engine")

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        extra_callbacks = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        engine, fresh_logs = self.engine, self.fresh_logs
        if self.subcommand in _EVALUATIONS:  # logs and config in run_dir/<command>/, or nowhere when read-only
            if self.evaluation_dir is None:
                config["logger"] = False
                self.save_config_callback = None
            else:
                engine, fresh_logs = dataclasses.replace(engine, run_dir=str(self.evaluation_dir)), True
        return self._instantiate_trainer(trainer_kwargs(engine, fresh_logs, **config), extra_callbacks)

    def predict(self, **kwargs: Any) -> None:
        """``trainer.predict``, keeping the predictions and saving them to ``run_dir/predict/predictions.pt``."""
        kwargs["return_predictions"] = True
        self.predictions = self.trainer.predict(**kwargs)
        if self.evaluation_dir is not None:
            torch.save(self.predictions, self.evaluation_dir / "predictions.pt")


def _writable_folder(folder: Path) -> Path | None:
    """``folder``, created if needed, or ``None`` if it cannot be written (a read-only share)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


# ---------------------------------------------------------------------------------------------------- chapters
@dataclasses.dataclass
class FitResult:
    """What :func:`fit_or_load` returns.

    Attributes:
        module: the trained LightningModule (eval mode, on the CPU unless trained elsewhere); ``.net`` is the model.
        datamodule: the data it was trained on (set up).
        trainer: the Trainer that trained or restored it.
        run_dir: the run folder (``plot_learning_curves(run_dir)`` draws its curves).
        last_checkpoint, best_checkpoint: paths (``None`` when absent).
        trained: whether this call ran any training step (``False``: everything came from the checkpoint).
        metrics: the last logged metrics (floats).
    """

    module: BookModule
    datamodule: pl.LightningDataModule
    trainer: pl.Trainer
    run_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    trained: bool
    metrics: dict[str, float]


#: The packages whose source defines what a run trains: models, attention, training code and data.
_CODE_PACKAGES = ("attention", "data", "models", "train")
_CACHE_KEY_FILE = "cache_key.json"


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 of the source of the attnbook packages that define a run (:data:`_CODE_PACKAGES`).

    Computed once per process: it describes the code this process has imported, which a running kernel
    keeps even if the files change on disk.
    """
    root = Path(__file__).resolve().parents[1]  # attnbook/
    digest = hashlib.sha256()
    for package in _CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def data_fingerprint(datamodule: pl.LightningDataModule) -> str:
    """SHA-256 of a datamodule's corpus text when it reads one (``load_text()``), else ``""``.

    A text corpus can change under an unchanged configuration (the standard library of another Python, an
    edited file); generated tasks are fixed by the code and the configuration, which the cache key holds.
    """
    load_text = getattr(datamodule, "load_text", None)
    return hashlib.sha256(load_text().encode()).hexdigest() if callable(load_text) else ""


def _recipe(config_path: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """What a run folder's checkpoint depends on, apart from the data: configuration, code and versions."""
    import attnbook

    return {
        "config": config_path.read_text(encoding="utf-8"),
        "overrides": list(overrides),
        "code": code_fingerprint(),
        "attnbook": attnbook.__version__,
        "torch": torch.__version__,
        "lightning": pl.__version__,
    }


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _read_cache_key(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / _CACHE_KEY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_cache_key(run_dir: Path, key: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    temporary = run_dir / f".{_CACHE_KEY_FILE}.tmp"
    temporary.write_text(json.dumps(key, sort_keys=True, indent=1), encoding="utf-8")
    os.replace(temporary, run_dir / _CACHE_KEY_FILE)


def _names_run_dir(overrides: Sequence[str]) -> bool:
    return any(arg == "--engine.run_dir" or arg.startswith("--engine.run_dir=") for arg in overrides)


def fit_or_load(
    config: str | os.PathLike[str],
    run_dir: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    retrain: bool = False,
) -> FitResult:
    """Train a preset (or YAML config) with the engine, or load it if its run folder has a checkpoint of it.

    Args:
        config: a preset name (``"gpt-quick"``) or a YAML path, exactly as ``attnbook fit --config`` takes.
        run_dir: the run folder. Default (``None``, and no ``--engine.run_dir`` among the overrides):
            ``$ATTNBOOK_CACHE/runs/<config>-<hash>`` (:func:`attnbook.data.text.get_cache_dir`), where the hash
            covers everything of the cache key below except the data, so each configuration and each version
            of the code keeps its own folder.
        overrides: command-line style overrides, e.g. ``["--trainer.max_epochs", "3"]``.
        retrain: ignore an existing checkpoint and train from scratch.

    **The cache key.** A checkpoint is reused only if the run folder's ``cache_key.json`` matches this call's
    key: the configuration's text, the overrides, a hash of the source of ``attnbook.attention``,
    ``attnbook.data``, ``attnbook.models`` and ``attnbook.train`` (:func:`code_fingerprint`), a hash of the
    corpus text for text datamodules (:func:`data_fingerprint`), and the versions of attnbook, PyTorch and
    Lightning. Otherwise (no key file, or a different key: say the model's code changed) the folder's old
    checkpoints and logs are deleted and the run trains afresh -- a stale model is never loaded silently.

    With a matching ``run_dir/checkpoints/last.ckpt`` the run is resumed from it: a finished run trains no step
    and just restores its weights, writing nothing (the folder may be read-only), an interrupted one finishes.
    Training holds the folder's lock: a second call on the same folder meanwhile (another notebook) waits,
    then loads what the first trained. A checkpoint that cannot be read raises
    :class:`~attnbook.train.checkpoint.CorruptCheckpointError` naming it (``retrain=True`` trains it again).
    Same parser, same Trainer, same checkpoints as ``attnbook fit --config <config> --ckpt_path last``. Like the
    command, it seeds Python, NumPy and PyTorch with the config's ``seed_everything`` (0 in the presets).
    Chapters leave ``run_dir`` to the default and pass quiet overrides such as
    ``["--engine.progress_bar", "false", "--trainer.enable_model_summary", "false"]``.
    """
    config_path = resolve_config(config)
    recipe = _recipe(config_path, overrides)
    args = ["--config", str(config_path), *overrides]
    if run_dir is None and not _names_run_dir(overrides):
        from attnbook.data.text import get_cache_dir

        run_dir = get_cache_dir() / "runs" / f"{config_path.stem}-{_digest(recipe)[:12]}"
    if run_dir is not None:
        args += ["--engine.run_dir", str(run_dir)]
    with warnings.catch_warnings():
        # Inside a notebook kernel sys.argv holds the kernel's own arguments; Lightning's note about them
        # does not apply when the arguments come from this function.
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
        cli = AttnbookCLI(args=args, run=False)
    trainer, module, datamodule = cli.trainer, cli.model, cli.datamodule
    engine = cli.engine
    folder = Path(engine.run_dir)
    key = {**recipe, "data": data_fingerprint(datamodule)}
    last = engine.checkpoint_dir / "last.ckpt"

    def matching_checkpoint() -> dict[str, Any] | None:
        if retrain or not last.is_file() or _read_cache_key(folder) != key:
            return None
        return read_checkpoint(last)

    lock = RunLock(folder)
    state = matching_checkpoint()
    if state is None or not _finished(trainer, state):  # this call writes: wait for any other writer, then look again
        lock.acquire(wait=True)
        state = matching_checkpoint()
    try:
        if state is None:  # a fresh run: nothing of an older run in this folder may mix into its logs or checkpoints
            if last.is_file() and not retrain:
                stored = _read_cache_key(folder) or {}
                changed = sorted(k for k in key if stored.get(k) != key[k])
                log.warning(
                    "%s holds a run of other code or settings (differs in: %s); training afresh", folder, changed
                )
            clear_run_logs(folder)
            for stale in engine.checkpoint_dir.glob("*.ckpt"):
                stale.unlink()
            _write_cache_key(folder, key)
        elif _finished(trainer, state):
            _without_writers(trainer)
        start_step = 0 if state is None else int(state.get("global_step", 0))
        with warnings.catch_warnings():  # the checkpoint writers are left out on purpose when loading
            warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint need to be provided")
            trainer.fit(module, datamodule=datamodule, ckpt_path=None if state is None else str(last))
    finally:
        lock.release()
    module.eval()
    best = engine.checkpoint_dir / "best.ckpt"
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    return FitResult(
        module=module,
        datamodule=datamodule,
        trainer=trainer,
        run_dir=folder,
        last_checkpoint=last if last.is_file() else None,
        best_checkpoint=best if best.is_file() else None,
        trained=trainer.global_step > start_step,
        metrics=metrics,
    )


def _finished(trainer: pl.Trainer, state: dict[str, Any]) -> bool:
    """Whether resuming from the end-of-epoch checkpoint ``state`` trains no step under ``trainer``'s limits."""
    if (
        trainer.max_steps is not None
        and trainer.max_steps >= 0
        and int(state.get("global_step", 0)) >= trainer.max_steps
    ):
        return True
    max_epochs = trainer.max_epochs
    return max_epochs is not None and max_epochs >= 0 and int(state.get("epoch", 0)) + 1 >= max_epochs


def _without_writers(trainer: pl.Trainer) -> None:
    """Make ``trainer`` restore a finished run writing nothing (the folder may be a read-only share): no loggers,
    no config, no checkpoints."""
    trainer.loggers = []
    writers = (SaveConfigCallback, ModelCheckpoint, LearningRateMonitor, ThroughputMonitor, MetricsLogCursor)
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, writers)]


def load_module(checkpoint: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> BookModule:
    """Load any attnbook checkpoint as its LightningModule (the class is read from the checkpoint), in eval mode."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(checkpoint)!r}")
    state = read_checkpoint(path)
    if "attnbook" not in state:
        raise ValueError(f"{str(checkpoint)!r} was not written by attnbook.train (it has no 'attnbook' entry)")
    module_name, _, class_name = state["attnbook"]["class_path"].rpartition(".")
    module_class = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(module_class, type) and issubclass(module_class, BookModule)):
        raise ValueError(f"{str(checkpoint)!r} names {module_name}.{class_name}, which is not an attnbook module")
    module = module_class.load_from_checkpoint(path, map_location=map_location, weights_only=False)
    return module.eval()

"""The ``attnbook`` command: train, evaluate and sample the book's models from the shell.

::

    attnbook presets                                    # the shipped presets, one line each
    attnbook fit --config gpt-quick                     # train (a preset name or a YAML path)
    attnbook fit --config gpt-quick --ckpt_path last    # resume an interrupted run
    attnbook validate|test|predict --config gpt-quick --ckpt_path best
    attnbook generate --ckpt runs/gpt-quick/checkpoints/last.ckpt --prompt "def " --max_new_tokens 200

``fit``/``validate``/``test``/``predict`` are Lightning's ``LightningCLI`` over attnbook's engine
(:mod:`attnbook.train.engine`): any setting can be overridden on the command line, e.g.
``--trainer.max_epochs 3``, ``--model.init_args.n_layer 6``, ``--engine.run_dir runs/mine``; ``--help`` lists the
chosen preset's model, data and engine options (instantly: Lightning is not imported), ``--help-all`` every option.
Only the trainer commands import Lightning, and only when they run: ``presets``, ``generate`` and the help do not.
Errors in the configuration or paths are reported in one line naming the field or the path, with exit code 2
(usage) or 1 (a failed run); set ``ATTNBOOK_DEBUG=1`` for the full traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence

__all__ = ["main"]

_TRAINER_COMMANDS = ("fit", "validate", "test", "predict")


def _error(message: str, code: int) -> int:
    sys.stderr.write(f"attnbook: error: {message}\n")
    return code


def _tidy(message: str) -> str:
    """One line from jsonargparse's message; for a subclass, just the reason it rejected the option."""
    message = " ".join(message.split())
    match = re.search(
        r'Parser key "([^"]+)":.*?Problem with given class_path \'([^\']+)\': (.*?)(?: - Expected a .*)?$', message
    )
    if match:
        key, class_path, reason = match.groups()
        return f"{key} ({class_path}): {reason}"
    return message


_SECTIONS = {"BookModule": "model", "LightningDataModule": "data"}


def _tidy_instantiation_error(message: str) -> str:
    """jsonargparse wraps an error raised by a model/data constructor in a list of union subtypes: keep the
    section (``model``/``data``) and the constructor's own message."""
    if "Does not validate against any of the Union subtypes" not in message:
        return message
    section = next((sec for cls, sec in _SECTIONS.items() if f".{cls}'>" in message.split("Errors:")[0]), "config")
    reasons = [
        line.strip()[2:] for line in message.split("Errors:", 1)[-1].splitlines() if line.strip().startswith("- ")
    ]
    reasons = [r for r in reasons if not r.startswith("Expected a <class 'NoneType'>")]
    return f"{section}: {reasons[0] if reasons else message}"


def _resolve_config_args(argv: list[str]) -> list[str]:
    """Replace preset names after ``--config`` by their YAML paths (paths are kept)."""
    from attnbook.train.presets import resolve_config

    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = str(resolve_config(out[i + 1]))
        elif arg.startswith("--config="):
            out[i] = "--config=" + str(resolve_config(arg.split("=", 1)[1]))
    return out


def _print_predictions(predictions: list | None) -> None:
    if not predictions:
        return
    first = predictions[0]
    if isinstance(first, list) and first and isinstance(first[0], dict) and "completion" in first[0]:
        for batch in predictions:
            for item in batch:
                print(f"{item['prompt']!r} -> {item['completion']!r}")


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def _quiet_dependencies() -> None:
    """Silence messages of the libraries that say nothing about the run: deprecations inside LightningCLI and
    jsonargparse, and Lightning's advertisement for a cloud logger."""
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    import lightning.pytorch  # noqa: F401  (creates the log handlers filtered here)

    for handler in logging.getLogger("lightning.pytorch").handlers:
        if not any(isinstance(f, _DropAdverts) for f in handler.filters):
            handler.addFilter(_DropAdverts())


def _config_argument(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (``--config X`` or ``--config=X``), else None."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def _quick_help(argv: list[str]) -> int:
    """``attnbook fit --help [--config PRESET]``: the preset's model, data and engine options, read from the
    source without importing Lightning (:mod:`attnbook.train.help`); ``--help-all`` gives Lightning's."""
    from attnbook.train.help import fit_help
    from attnbook.train.presets import resolve_config

    config = _config_argument(argv)
    try:
        path = resolve_config(config) if config is not None else None
    except (ValueError, FileNotFoundError) as err:
        return _error(str(err), 2)
    sys.stdout.write(fit_help(argv[0], path))
    return 0


def _trainer_command(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv[1:]):
        return _quick_help(argv)
    if "--help-all" in argv[1:]:
        argv = [("--help" if arg == "--help-all" else arg) for arg in argv]
    _quiet_dependencies()
    from jsonargparse import ArgumentError

    from attnbook.train.engine import AttnbookCLI

    try:
        argv = _resolve_config_args(argv)
    except (ValueError, FileNotFoundError) as err:
        return _error(str(err), 2)
    saved_argv = sys.argv
    sys.argv = sys.argv[:1]  # the arguments are passed explicitly; LightningCLI warns if it sees them twice
    try:
        parser_kwargs = {"exit_on_error": False, "prog": "attnbook", "allow_abbrev": False}  # subcommands inherit it
        cli = AttnbookCLI(args=argv, parser_kwargs=parser_kwargs)
    except ArgumentError as err:
        return _error(f"{_tidy(str(err))}\n(see `attnbook {argv[0]} --help` for the accepted options)", 2)
    finally:
        sys.argv = saved_argv
    if argv[0] == "predict":
        _print_predictions(cli.predictions)
    return 0


def _presets_command(argv: list[str]) -> int:
    from attnbook.train.presets import preset_description, preset_names

    argparse.ArgumentParser(
        prog="attnbook presets", description="List the shipped presets.", allow_abbrev=False
    ).parse_args(argv)
    names = preset_names()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {preset_description(name)}")
    return 0


def _generate_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="attnbook generate", description="Sample text from a trained GPT checkpoint.", allow_abbrev=False
    )
    parser.add_argument(
        "--ckpt", required=True, help="a checkpoint of a GPT run (e.g. runs/gpt-quick/checkpoints/last.ckpt)"
    )
    parser.add_argument("--prompt", default="\n", help="the text to continue (characters of the training corpus)")
    parser.add_argument("--max_new_tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top_k", type=int, default=None)
    parser.add_argument("--num_samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.ckpt):
        return _error(f"--ckpt: no checkpoint file at {args.ckpt!r}", 2)
    if args.max_new_tokens < 0:
        return _error(f"--max_new_tokens must be >= 0, got {args.max_new_tokens}", 2)
    if args.temperature <= 0:
        return _error(f"--temperature must be > 0, got {args.temperature}", 2)
    if args.top_k is not None and args.top_k < 1:
        return _error(f"--top_k must be >= 1, got {args.top_k}", 2)
    if args.num_samples < 1:
        return _error(f"--num_samples must be >= 1, got {args.num_samples}", 2)
    import torch

    from attnbook.train.engine import load_module
    from attnbook.train.modules import GPTModule

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        device_type = torch.device(device).type
    except RuntimeError:
        return _error(f"--device: {device!r} is not a device; use cpu, cuda, cuda:N or auto", 2)
    if device_type == "cuda" and not torch.cuda.is_available():
        return _error(f"--device {device}: this machine has no CUDA GPU that PyTorch can use; use --device cpu", 2)
    module = load_module(args.ckpt, map_location=device)
    if not isinstance(module, GPTModule):
        return _error(f"--ckpt: {args.ckpt!r} holds a {type(module).__name__}, not a GPT", 2)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    for i in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {i + 1}")
        text = module.complete(args.prompt, args.max_new_tokens, args.temperature, args.top_k, generator=generator)
        print(text)
    return 0


_USAGE = """usage: attnbook {fit,validate,test,predict,generate,presets} ...

  fit        train a model:               attnbook fit --config gpt-quick
  validate   evaluate on validation data: attnbook validate --config gpt-quick --ckpt_path best
  test       evaluate on test data:       attnbook test --config gpt-quick --ckpt_path best
  predict    run predictions:             attnbook predict --config gpt-quick --ckpt_path last
  generate   sample from a GPT:           attnbook generate --ckpt runs/gpt-quick/checkpoints/last.ckpt --prompt "def "
  presets    list the shipped presets

--config takes a preset name (see `attnbook presets`) or a YAML path; `attnbook fit --config gpt-quick --help`
lists that preset's model, data and engine options; `attnbook fit --help-all` lists every option, Lightning's too.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``attnbook`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    commands = {"presets": _presets_command, "generate": _generate_command}
    if command not in commands and command not in _TRAINER_COMMANDS:
        return _error(f"unknown command {command!r}; choose from {', '.join([*_TRAINER_COMMANDS, *commands])}", 2)
    try:
        if command in _TRAINER_COMMANDS:
            return _trainer_command(args)
        return commands[command](rest)
    except KeyboardInterrupt as interrupt:  # RunInterrupted says how to resume
        return _error(str(interrupt) or "interrupted", 130)
    except SystemExit as exit_:  # argparse's own usage errors (already printed)
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else _error(exit_.code, 2)
    except Exception as err:  # one clear line instead of a traceback; ATTNBOOK_DEBUG=1 shows it
        if os.environ.get("ATTNBOOK_DEBUG"):
            raise
        from attnbook.train.callbacks import NonFiniteLossError
        from attnbook.train.lock import RunFolderLockedError

        message = _tidy_instantiation_error(str(err))
        plain = (ValueError, FileNotFoundError, FileExistsError, NonFiniteLossError, RunFolderLockedError)
        plain = isinstance(err, plain)
        return _error(message if plain else f"{type(err).__name__}: {message}", 1)


if __name__ == "__main__":
    sys.exit(main())

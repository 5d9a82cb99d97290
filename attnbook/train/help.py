"""``attnbook fit --help`` without importing Lightning: the options of the chosen preset's model and data.

Lightning's own help (``attnbook fit --help-all``) needs ``lightning.pytorch`` imported (seconds) and lists
about sixty trainer options, but not the init arguments of the model and data classes a preset names. This
module reads those from the source of :mod:`attnbook.train` with :mod:`ast` -- each class's ``__init__``
signature and the ``Args:`` section of its docstring -- and the preset's YAML for the values it sets, so the
help is instant and shows what a user can change for the preset they chose.
"""

from __future__ import annotations

import ast
import functools
import re
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["ClassOptions", "class_options", "fit_help"]

_TRAIN = Path(__file__).resolve().parent
#: Trainer options most runs touch; ``--help-all`` lists every one.
_COMMON_TRAINER = (
    ("max_epochs", "epochs to train (an epoch is data.batches_per_epoch batches)"),
    ("max_steps", "or: optimizer steps to train (-1: use max_epochs)"),
    ("accelerator", "cpu, gpu, auto, ..."),
    ("devices", "how many devices (or which)"),
    ("precision", "32-true, bf16-mixed, 16-mixed, ..."),
    ("gradient_clip_val", "clip the gradient norm at this value"),
    ("accumulate_grad_batches", "batches per optimizer step"),
    ("log_every_n_steps", "how often the per-step metrics are written"),
    ("check_val_every_n_epoch", "validate every this many epochs"),
)


class ClassOptions:
    """The init options of one class, read from its source: ``(name, annotation, default, description)``."""

    def __init__(self, class_path: str, options: list[tuple[str, str, str, str]]) -> None:
        self.class_path, self.options = class_path, options


def _docstring_args(node: ast.ClassDef) -> dict[str, str]:
    """``{arg: description}`` from the ``Args:`` section of a class docstring (``a, b: shared text`` allowed)."""
    doc = ast.get_docstring(node) or ""
    out: dict[str, str] = {}
    if "Args:" not in doc:
        return out
    section = textwrap.dedent(doc.split("Args:", 1)[1])
    names: list[str] = []
    for line in section.splitlines():
        match = re.match(r"^(\w+(?:, \w+)*):\s*(.*)$", line)
        if match:
            names = match.group(1).split(", ")
            for name in names:
                out[name] = match.group(2).strip()
        elif line.startswith((" ", "\t")) and names:
            for name in names:
                out[name] = f"{out[name]} {line.strip()}".strip()
        elif line.strip() and not line.startswith(" "):
            break  # the next section (Attributes:, ...)
    return {k: re.sub(r":\w+:`~?([^`]+)`", r"\1", v).replace("``", "") for k, v in out.items()}


@functools.cache
def _classes(module: str) -> dict[str, ast.ClassDef]:
    tree = ast.parse((_TRAIN / f"{module}.py").read_text(encoding="utf-8"))
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _find_class(name: str) -> tuple[str, ast.ClassDef] | None:
    for module in ("modules", "data", "engine"):
        node = _classes(module).get(name)
        if node is not None:
            return module, node
    return None


def class_options(class_path: str) -> ClassOptions | None:
    """The init options of an attnbook.train class (``"attnbook.train.GPTModule"`` or ``"GPTModule"``), read
    from the source; ``None`` for a class outside :mod:`attnbook.train`."""
    name = class_path.rpartition(".")[2]
    if class_path.count(".") and not class_path.startswith("attnbook.train"):
        return None
    found = _find_class(name)
    if found is None:
        return None
    module, node = found
    docs = _docstring_args(node)
    for base in node.bases:  # "see BookModule" / "as in CharDataModule": take the base's description
        base_found = _find_class(ast.unparse(base).rpartition(".")[2])
        if base_found is not None:
            docs = {**_docstring_args(base_found[1]), **{k: v for k, v in docs.items() if not v.startswith("see ")}}
    for other in ("BookModule", "CharDataModule"):
        referenced = _find_class(other)
        if referenced is not None:
            shared = _docstring_args(referenced[1])
            docs = {k: (shared.get(k, v) if re.match(r"^(see|as in) ", v) else v) for k, v in docs.items()}
    init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    options: list[tuple[str, str, str, str]] = []
    if init is not None:
        args = init.args.args[1:]
        defaults = [None] * (len(args) - len(init.args.defaults)) + list(init.args.defaults)
        for arg, default in zip(args, defaults, strict=True):
            annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
            shown = ast.unparse(default) if default is not None else "required"
            options.append((arg.arg, annotation, shown, docs.get(arg.arg, "")))
    else:  # a dataclass (EngineOptions): its annotated fields
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                default = ast.unparse(item.value) if item.value is not None else "required"
                default = re.sub(r"dataclasses\.field\(default_factory=lambda: (.*)\)", r"\1", default)
                options.append((item.target.id, ast.unparse(item.annotation), default, docs.get(item.target.id, "")))
    return ClassOptions(f"attnbook.train.{node.name}", options)


def _subclasses(module: str, roots: tuple[str, ...]) -> list[str]:
    """Public classes of ``attnbook.train.<module>`` deriving (through the module) from one of ``roots``."""
    classes = _classes(module)
    found: list[str] = []
    changed = True
    known = set(roots)
    while changed:
        changed = False
        for name, node in classes.items():
            bases = {ast.unparse(b).rpartition(".")[2] for b in node.bases}
            if name not in known and bases & known:
                known.add(name)
                changed = True
    found = [n for n in classes if n in known and n not in roots and not n.startswith("_")]
    return found


def _format_section(title: str, prefix: str, options: ClassOptions, preset: dict[str, Any]) -> list[str]:
    lines = [f"{title}: {options.class_path}"]
    previous = ""
    for name, annotation, default, doc in options.options:
        doc, previous = ("" if doc == previous else doc), doc  # a description shared by a group: shown once
        value = f"{default}" if name not in preset else f"{preset[name]!r} (preset; default {default})"
        head = f"  --{prefix}{name} {annotation}".rstrip()
        lines.append(f"{head}  = {value}")
        if doc:
            lines += textwrap.wrap(doc, width=108, initial_indent="      ", subsequent_indent="      ")
    return lines


def _section(config: dict[str, Any], key: str) -> tuple[str | None, dict[str, Any]]:
    value = config.get(key)
    if isinstance(value, dict):
        return value.get("class_path"), dict(value.get("init_args") or {})
    if isinstance(value, str):
        return value, {}
    return None, {}


def fit_help(command: str, config_path: Path | None) -> str:
    """The help of ``attnbook <command>``: the model, data and engine options of ``config_path``'s classes
    (with the values the config sets), the common trainer options, and the classes ``--model``/``--data``
    accept. No Lightning import."""
    import yaml

    config: dict[str, Any] = {}
    if config_path is not None:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    where = f" --config {config_path.stem}" if config_path is not None else " --config CONFIG"
    lines = [
        f"usage: attnbook {command}{where} [--ckpt_path last|best|PATH] [--SECTION.OPTION VALUE ...]",
        "",
        "--config takes a preset name (`attnbook presets`) or a YAML path; every option below overrides it.",
        "Options of the preset's classes are set as --model.init_args.NAME / --data.init_args.NAME.",
    ]
    if config_path is None:
        lines.append("Add --config PRESET to see the model and data options of that preset (e.g. --config gpt-quick).")
    for key, title in (("model", "Model"), ("data", "Data")):
        class_path, values = _section(config, key)
        if class_path is None:
            continue
        options = class_options(class_path)
        lines.append("")
        if options is None:
            lines.append(f"{title}: {class_path} (not an attnbook class: `attnbook {command} --help-all` lists it)")
            continue
        lines += _format_section(title, f"{key}.init_args.", options, values)
    engine = class_options("EngineOptions")
    if engine is not None:
        lines.append("")
        lines += _format_section("Engine", "engine.", engine, dict(config.get("engine") or {}))
    trainer = dict(config.get("trainer") or {})
    lines += ["", "Trainer (Lightning's; the most used -- `attnbook fit --help-all` lists all of them):"]
    for name, doc in _COMMON_TRAINER:
        value = f" = {trainer[name]!r} (preset)" if name in trainer else ""
        lines.append(f"  --trainer.{name}{value}  {doc}")
    others = [k for k in trainer if k not in dict(_COMMON_TRAINER)]
    if others:
        lines.append("  the preset also sets: " + ", ".join(f"--trainer.{k} {trainer[k]!r}" for k in others))
    lines += [
        "",
        "Other classes: --model " + ", ".join(_subclasses("modules", ("BookModule",)))
        + "; --data " + ", ".join(_subclasses("data", ("_BookDataModule",))),
        "(or any class path: --model my.module.MyLightningModule; `--model.help CLASS` shows a class's options)",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"

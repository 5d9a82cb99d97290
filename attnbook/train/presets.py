"""The YAML presets shipped in ``attnbook/presets`` (light: importing this module does not import Lightning)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["preset_names", "preset_path", "preset_description", "resolve_config"]


def _preset_folder() -> Path:
    return Path(str(resources.files("attnbook") / "presets"))


def preset_names() -> list[str]:
    """The presets shipped in ``attnbook/presets``, sorted."""
    return sorted(p.stem for p in _preset_folder().glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The YAML file of a shipped preset; ``ValueError`` naming the known presets otherwise."""
    path = _preset_folder() / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; the shipped presets are: {', '.join(preset_names())}")
    return path


def preset_description(name: str) -> str:
    """The preset's one-line description: its first comment line."""
    for line in preset_path(name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def resolve_config(config: str | os.PathLike[str]) -> Path:
    """A preset name or a path to a YAML config -> the config's path.

    Raises ``FileNotFoundError`` for a path that does not exist and ``ValueError`` for a name that is neither
    a preset nor a file; both messages name what was given.
    """
    text = str(config)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if text in preset_names():
        return preset_path(text)
    if path.suffix in (".yaml", ".yml") or os.sep in text:
        raise FileNotFoundError(f"--config: no config file at {text!r}")
    raise ValueError(
        f"--config: {text!r} is neither a shipped preset nor an existing file; presets: {', '.join(preset_names())}"
    )

"""The repository stands alone and the package ships whole.

* No tracked file refers outside the repository (to a team folder beside it, or to a machine's absolute paths).
* The licences, the citation file and the package metadata agree with each other.
* The sdist holds the package and its data and leaves the tests, chapters and scripts out (MANIFEST.in).
* slow: a wheel built from the sdist installs, non-editable, into a fresh virtual environment outside the
  repository and works there: ``import attnbook``, ``attnbook presets`` and a 20-step ``attnbook fit``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
#: What a file of a stand-alone repository must not mention. Built from parts so that this file does not match.
OUTSIDE = re.compile(
    "|".join([r"\.\./" + "shared", "/work" + "/", r"\bshared/" + "seeds", r"\bshared/[A-Z][A-Z-]+\.md"])
)


def _repository_files() -> list[Path]:
    """Tracked files plus new ones git does not ignore (what a commit of this tree would hold)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def _copy_of_repository(dest: Path) -> Path:
    for path in _repository_files():
        target = dest / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest


def test_no_file_refers_outside_the_repository():
    offenders = []
    for path in _repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        for number, line in enumerate(text.splitlines(), start=1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not offenders, "files that refer outside the repository:\n" + "\n".join(offenders)


def test_the_pattern_catches_outside_references():
    for line in [
        "see ../" + "shared/" + "BOOK-PLAN.md",
        "/work" + "/main/.venv/bin/python",
        "the shared/" + "seeds list",
    ]:
        assert OUTSIDE.search(line), line
    assert not OUTSIDE.search("weights shared by all heads; shared_scale=False")


@pytest.mark.parametrize("doc", ["README.md", "CONTRIBUTING.md", "data/README.md"])
def test_relative_links_resolve(doc):
    """Every relative link of the front-page documents points at a file or folder of the repository."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    relative = [link.split("#")[0] for link in links if not re.match(r"[a-z]+:|#", link)]
    assert relative or doc == "data/README.md"
    missing = [link for link in relative if not ((ROOT / doc).parent / link).exists()]
    assert not missing, f"{doc} links to missing paths: {missing}"


def test_licences_citation_and_metadata_agree():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert not [c for c in project["classifiers"] if c.startswith("License ::")], "SPDX license replaces classifiers"
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]  # the first to read an SPDX license string
    assert project["requires-python"] == ">=3.11"
    assert {"Homepage", "Source", "Issues"} <= set(project["urls"])
    mit = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert mit.startswith("MIT License") and "Permission is hereby granted, free of charge" in mit
    text_licence = (ROOT / "LICENSE-text").read_text(encoding="utf-8")
    assert "CC BY-SA 4.0" in text_licence and "https://creativecommons.org/licenses/by-sa/4.0/" in text_licence
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert (
        cff["message"]
        and cff["title"]
        and cff["authors"]
        and all("name" in a or "family-names" in a for a in cff["authors"])
    )
    assert cff["license"] == project["license"] and str(cff["version"]) == project["version"]
    assert cff["repository-code"] == project["urls"]["Source"]


def _build_sdist(source: Path, out: Path) -> Path:
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    result = subprocess.run([sys.executable, "-c", code, str(out)], cwd=source, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return out / result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} is older than the build-system's setuptools>=77")
    work = tmp_path_factory.mktemp("sdist")
    return _build_sdist(_copy_of_repository(work / "src"), work / "dist")


def test_sdist_holds_the_package_and_leaves_the_book_out(sdist):
    with tarfile.open(sdist) as tar:
        names = {Path(*Path(n).parts[1:]).as_posix() for n in tar.getnames()}
    assert {
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "attnbook/data/registry.yaml",
        "attnbook/py.typed",
        "attnbook/presets/gpt-quick.yaml",
        "attnbook/cli.py",
    } <= names
    assert not [n for n in names if n.split("/")[0] in {"tests", "chapters", "scripts", "data", "site", "benchmarks"}]


@pytest.mark.slow
def test_wheel_installs_and_trains_outside_the_repository(sdist, tmp_path):
    """sdist -> wheel -> a fresh venv outside the repository -> import, presets and a 20-step fit there."""
    timings: dict[str, float] = {}
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "ATTNBOOK_CACHE"}}
    env["OMP_NUM_THREADS"] = "1"

    def run(step: str, args: list[str], **kwargs) -> str:
        start = time.perf_counter()
        result = subprocess.run(args, capture_output=True, text=True, env=kwargs.pop("env", env), timeout=900, **kwargs)
        timings[step] = timings.get(step, 0.0) + time.perf_counter() - start
        assert result.returncode == 0, f"{step} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    run("build wheel", [*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(sdist)])
    (wheel,) = wheels.glob("attnbook-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert {"attnbook/data/registry.yaml", "attnbook/presets/gpt-quick.yaml"} <= set(zf.namelist())

    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    run("create venv", [sys.executable, "-m", "venv", "--without-pip", str(venv)])
    install = [*pip, "--python", str(python), "install", "--quiet", "--no-compile"]
    # One resolver pass: the CPU torch pinned as scripts/setup.sh pins it, the wheel, and the wheel's dependencies.
    run("install torch + wheel", [*install, f"torch=={os.environ.get('ATTNBOOK_TORCH', '2.13.0')}", str(wheel)])
    freeze = run("pip freeze", [*pip, "--python", str(python), "freeze"])
    assert "attnbook @ file://" in freeze or "attnbook==0.1.0" in freeze, freeze  # installed, not editable
    assert "-e " not in freeze

    outside = tmp_path / "elsewhere"  # the working directory: no repository above it
    (outside / "home").mkdir(parents=True)
    probe = (
        "import attnbook, attnbook.data as d; print(attnbook.__file__); print(d.repository_root()); "
        "print(d.get_cache_dir(create=False)); print(sorted(d.all_datasets()))"
    )
    lines = run("import", [str(python), "-c", probe], cwd=outside, env={**env, "HOME": str(outside / "home")})
    module, root, cache, names = lines.strip().splitlines()
    assert Path(module).is_relative_to(venv) and root == "None"
    assert Path(cache) == outside / "home" / ".cache" / "attnbook"  # the user cache, not a clone's data/cache
    assert "tiny_shakespeare" in names and "sklearn_digits" in names

    attnbook_cmd = str(venv / "bin" / "attnbook")
    presets = run("attnbook presets", [attnbook_cmd, "presets"], cwd=outside)
    assert "gpt-quick" in presets and "pointer-hull-quick" in presets
    fit_env = {**env, "ATTNBOOK_CACHE": str(outside / "cache")}
    run_dir = outside / "runs" / "gpt-quick"
    args = [attnbook_cmd, "fit", "--config", "gpt-quick", "--trainer.max_steps", "20", "--engine.run_dir", str(run_dir)]
    run("attnbook fit (20 steps)", args, cwd=outside, env=fit_env)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    metrics = (run_dir / "metrics.csv").read_text(encoding="utf-8").splitlines()
    header = metrics[0].split(",")
    steps = [int(row.split(",")[header.index("step")]) for row in metrics[1:]]
    assert max(steps) == 19, f"the run logged steps up to {max(steps)}, expected 20 steps (0..19)"
    sys.stdout.write("\n" + ", ".join(f"{step}: {seconds:.1f} s" for step, seconds in timings.items()) + "\n")

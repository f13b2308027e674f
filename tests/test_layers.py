"""The package's layers (pyproject.toml, ``[tool.importlinter]``) hold: no import cycles, nothing imports upwards.
Importing the package changes nothing global."""

import subprocess
import sys
from pathlib import Path

import pytest

import smilesformer

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.is_file():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, capture_output=True, text=True)


def test_import_contract_is_kept():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contract_catches_an_upward_import(tmp_path):
    """The contract is not vacuous: a low module importing a high one, even inside a function, breaks it."""
    copy = tmp_path / "repo"
    (copy / "src").mkdir(parents=True)
    subprocess.run(["cp", "-r", str(ROOT / "src" / "smilesformer"), str(copy / "src")], check=True)
    (copy / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    tasks = copy / "src" / "smilesformer" / "tasks.py"
    upward = "\n\ndef _upward():\n    from .model import SmilesModel\n\n    return SmilesModel\n"
    tasks.write_text(tasks.read_text() + upward)
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.is_file():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    env = {"PYTHONPATH": str(copy / "src"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(exe), "--no-cache"], cwd=copy, capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "smilesformer.tasks is not allowed to import smilesformer.model" in result.stdout


def test_importing_the_package_changes_nothing_global():
    code = (
        "import logging, matplotlib, torch\n"
        "backend = matplotlib.get_backend()\n"
        "state = torch.random.get_rng_state().clone()\n"
        "handlers = list(logging.getLogger().handlers)\n"
        "import smilesformer, smilesformer.plots, smilesformer.workflow, smilesformer.model\n"
        "from smilesformer import SmilesModel\n"
        "SmilesModel.from_scratch('tiny', 'regression', ['y'], vocab_smiles=['CCO'], seed=3)\n"
        "assert matplotlib.get_backend() == backend, (backend, matplotlib.get_backend())\n"
        "assert torch.equal(torch.random.get_rng_state(), state), 'a model build reseeded the global generator'\n"
        "assert logging.getLogger().handlers == handlers\n"
    )
    env = {"MPLBACKEND": "svg", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_package_and_the_command_start_without_torch():
    """`import smilesformer` and `smilesformer --help` load no PyTorch, transformers or scikit-learn (seconds of
    imports); every public name still resolves, loading its module on first use."""
    code = ("import sys, smilesformer, smilesformer.cli\n"
            "heavy = [m for m in ('torch', 'transformers', 'sklearn', 'matplotlib') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "missing = [n for n in smilesformer.__all__ if getattr(smilesformer, n, None) is None]\n"
            "assert not missing, missing\n"
            "assert 'torch' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        smilesformer.nothing_here  # noqa: B018

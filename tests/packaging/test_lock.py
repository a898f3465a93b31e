"""The lock check (`scripts/lock --check`) passes on the committed locks and fails, saying how to
relock, when pyproject.toml drifts from them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    return tmp_path


def lock_check(project: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, str(project / "scripts" / "lock"), "--check"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_committed_locks_pass(project_copy: Path) -> None:
    result = lock_check(project_copy)
    assert result.returncode == 0, result.stderr


def test_new_dependency_without_relock_fails(project_copy: Path) -> None:
    pyproject = project_copy / "pyproject.toml"
    edit(pyproject, "dependencies = [\n", 'dependencies = [\n    "six>=1.16",\n')
    result = lock_check(project_copy)
    assert result.returncode == 1
    assert "uv.lock does not match pyproject.toml" in result.stderr
    assert "run `scripts/lock`" in result.stderr


def test_lowest_versions_file_must_pin_the_floors(project_copy: Path) -> None:
    lowest = project_copy / "requirements" / "lowest-direct.txt"
    pin = re.search(r"^redis==(\S+)", lowest.read_text(), re.MULTILINE)
    assert pin is not None
    edit(lowest, f"redis=={pin.group(1)}", "redis==8.2.0")
    result = lock_check(project_copy)
    assert result.returncode == 1
    assert "lowest-direct.txt has redis==8.2.0, not the floor" in result.stderr


def test_bootstrap_uv_must_be_the_locked_uv(project_copy: Path) -> None:
    edit(project_copy / "requirements" / "bootstrap.txt", "uv==", "uv==0.0.1  # was ")
    result = lock_check(project_copy)
    assert result.returncode == 1
    assert "bootstrap.txt is not uv.lock's uv" in result.stderr

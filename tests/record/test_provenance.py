"""Provenance: the commit of roboloop's source checkout (and whether it was dirty) and the versions of the
software that shaped an episode, gathered once per process. Demonstrations, runs and rollouts carry them
(checked in test_collect, test_train and test_evaluate through the catalog)."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import pytest

import roboloop
from roboloop import schema
from roboloop.record.episode import git_state, provenance


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git checkout with a package folder `pkg/` tracked in it, one commit."""
    root = tmp_path / "checkout"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("x = 1\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    return root


def test_git_state_of_a_checkout_clean_dirty_and_untracked(repo):
    head = _git(repo, "rev-parse", "HEAD")
    assert git_state(repo / "pkg") == (head, False)
    (repo / "notes.txt").write_text("untracked files do not make a checkout dirty")
    assert git_state(repo / "pkg") == (head, False)
    (repo / "pkg" / "__init__.py").write_text("x = 2\n")
    assert git_state(repo / "pkg") == (head, True)


def test_no_commit_outside_a_checkout_or_for_an_untracked_package(repo, tmp_path):
    plain = tmp_path / "site-packages" / "pkg"
    plain.mkdir(parents=True)
    (plain / "__init__.py").write_text("")
    assert git_state(plain) == (None, False)
    # a package installed into a folder that happens to sit inside a repository is not that repository's code
    venv_pkg = repo / ".venv" / "lib" / "pkg"
    venv_pkg.mkdir(parents=True)
    (venv_pkg / "__init__.py").write_text("")
    assert git_state(venv_pkg) == (None, False)


def test_provenance_names_the_running_code_and_installed_versions():
    p = provenance()
    commit, dirty = git_state(Path(roboloop.__file__).resolve().parent)
    assert p[schema.EPISODE_GIT_COMMIT] == (commit or "none") and p[schema.EPISODE_GIT_DIRTY] == dirty
    expected = roboloop.__version__ + (f"+g{commit[:12]}" + (".dirty" if dirty else "") if commit else "")
    assert p[schema.EPISODE_SOFTWARE_VERSION] == expected
    for name, dist in schema.PROVENANCE_DISTRIBUTIONS.items():
        assert p[name] == metadata.version(dist), name  # all four are installed in the test environment
    assert set(schema.PROVENANCE_DISTRIBUTIONS) == {"rerun_sdk_version", "mujoco_version", "gym_aloha_version", "torch_version"}
    assert provenance() == p and provenance() is not provenance()  # cached, but callers get their own dict

"""Import by path (`package.module:attr`): each way it can go wrong is its own error, naming the module and
attribute; a module that is found but whose own import fails is told apart from one that is not found."""

import sys

import pytest

from roboloop import plugins
from roboloop.errors import RoboloopError


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """A folder on sys.path with a package `rl_plug_pkg` (module `good`, `broken`, `needs_dep`)."""
    pkg = tmp_path / "rl_plug_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text("class Thing:\n    size = 3\n\nVALUE = {'a': 1}\n")
    (pkg / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    (pkg / "needs_dep.py").write_text("import rl_plug_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("rl_plug_pkg")]:
        del sys.modules[name]


def test_objects_load_by_path_including_dotted_attributes(user_code):
    import rl_plug_pkg.good as good

    assert plugins.import_object("rl_plug_pkg.good:VALUE") is good.VALUE
    assert plugins.import_object("rl_plug_pkg.good:Thing") is good.Thing
    assert plugins.import_object("rl_plug_pkg.good:Thing.size") == 3
    assert plugins.split_import_path("a.b:c.d") == ("a.b", "c.d")


@pytest.mark.parametrize("spec", ["rl_plug_pkg.good", "rl_plug_pkg.good:", ":Thing", ""])
def test_malformed_paths(spec):
    with pytest.raises(plugins.ImportPathError, match="must look like 'package.module:attr'"):
        plugins.import_object(spec)


@pytest.mark.parametrize("spec, missing", [
    ("rl_plug_nowhere:x", "rl_plug_nowhere"),  # no such top-level module
    ("rl_plug_pkg.nowhere:x", "rl_plug_pkg.nowhere"),  # the package exists, the module in it does not
    ("rl_plug_nowhere.sub:x", "rl_plug_nowhere.sub"),  # the package it would live in does not exist
])
def test_module_not_found(user_code, spec, missing):
    with pytest.raises(plugins.PluginNotFoundError) as err:
        plugins.import_object(spec)
    assert err.value.module_name == missing and err.value.spec == spec
    assert f"cannot import module {missing!r}" in str(err.value)
    assert isinstance(err.value.__cause__, ModuleNotFoundError)


@pytest.mark.parametrize("module, cause, text", [
    ("rl_plug_pkg.broken", RuntimeError, "RuntimeError: boom at import"),
    # a module the plugin imports is missing: the plugin was found, its import failed
    ("rl_plug_pkg.needs_dep", ModuleNotFoundError, "No module named 'rl_plug_absent_dependency'"),
])
def test_module_found_but_its_import_failed(user_code, module, cause, text):
    with pytest.raises(plugins.PluginImportFailedError) as err:
        plugins.import_object(f"{module}:x")
    assert not isinstance(err.value, plugins.PluginNotFoundError)
    assert err.value.module_name == module
    assert f"importing module {module!r} failed" in str(err.value) and text in str(err.value)
    assert isinstance(err.value.__cause__, cause)


def test_missing_attribute_names_module_and_attribute(user_code):
    with pytest.raises(plugins.PluginAttributeError) as err:
        plugins.import_object("rl_plug_pkg.good:Thing.colour")
    assert str(err.value) == "module 'rl_plug_pkg.good' has no attribute 'Thing.colour'"
    assert err.value.attr == "Thing.colour" and err.value.module.__name__ == "rl_plug_pkg.good"


def test_every_error_is_a_roboloop_error():
    for cls in (plugins.ImportPathError, plugins.PluginNotFoundError, plugins.PluginImportFailedError,
                plugins.PluginAttributeError):
        assert issubclass(cls, plugins.PluginError) and issubclass(cls, RoboloopError)

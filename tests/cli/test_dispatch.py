"""`roboloop CMD` loads only CMD's module: the command table matches what each module registers."""

from __future__ import annotations

import importlib

import pytest
import typer

from roboloop import cli


def _registered(module: str) -> list[str]:
    app = typer.Typer()
    importlib.import_module(f"roboloop.cli.{module}").register(app)
    return [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]


@pytest.mark.parametrize("module", list(cli.COMMAND_MODULES))
def test_command_table_names_what_each_module_registers(module):
    assert sorted(cli.COMMAND_MODULES[module]) == sorted(_registered(module))


def test_every_command_of_the_app_is_in_the_table():
    full = cli.build_app()  # a new one: other tests register more commands on `cli.app`
    groups = [g.name for g in full.registered_groups]
    listed = [n for names in cli.COMMAND_MODULES.values() for n in names]
    assert [c.name for c in full.registered_commands] == [n for n in listed if n not in groups]  # same (help) order
    assert sorted(groups) == sorted(n for n in listed if n in groups)


@pytest.mark.parametrize(("argv", "name"), [
    (["success", "--by", "x"], "success"),
    (["--workspace", "success", "compare", "a", "b"], "compare"),  # a workspace folder called "success"
    (["-w", "ws", "--catalog", "http://x", "-v", "gaps", "--eval", "e"], "gaps"),
    (["--workspace=ws", "report"], "report"),
    (["--help"], None),
    ([], None),
])
def test_command_name_skips_global_options(argv, name):
    assert cli.command_name(argv) == name


def test_app_for_a_command_holds_only_its_module():
    app = cli.app_for(["-w", "ws", "success"])
    assert [c.name for c in app.registered_commands] == list(cli.COMMAND_MODULES["analyze_cmds"])
    assert cli.app_for(["no-such-command"]) is cli.app  # typos and help: the full app (its error lists every command)

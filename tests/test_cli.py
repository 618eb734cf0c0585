"""The `toon3d` dispatcher: every sub-command registers, help works, errors are one line."""

import pytest

from toon3d import cli
from toon3d.errors import Toon3dError


@pytest.mark.parametrize("argv", [["generate"], ["render"], ["data"], ["data", "synface"],
                                  ["data", "cartoons"], ["data", "prepare"]])
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage: toon3d" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 1
    assert cli.main(["data"]) == 1
    assert "COMMAND" in capsys.readouterr().out


def test_toon3d_error_is_one_line_without_traceback(monkeypatch, capsys):
    def boom(args):
        raise Toon3dError("thing.pt not found; check the path")

    parser = cli.build_parser()
    args = parser.parse_args(["generate", "--out", "x"])
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["generate"].set_defaults(func=boom)
    assert cli.main(["generate", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err == "toon3d generate: error: thing.pt not found; check the path\n"
    assert args.command == "generate"

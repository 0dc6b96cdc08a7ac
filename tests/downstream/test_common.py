"""One command-line convention (helm.args) for every downstream command, tables, export and fetch: the flag
spellings, one-line errors with exit 2, the shared JSON tail (helm.downstream.command) and a --help that loads
no heavy library."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from helm.downstream.command import EvalRecord, run_json_command
from helm.downstream.common import InputError

MODULES = {"embed": "helm.downstream.features", "probe": "helm.downstream.probe",
           "baseline": "helm.downstream.baselines", "annotate": "helm.downstream.annotate",
           "generate": "helm.downstream.generate", "cluster": "helm.downstream.cluster", "tables": "helm.report.cli",
           "export": "helm.export", "fetch": "helm.fetch"}  # fmt: skip
HEAVY = ("torch", "sklearn", "scipy", "transformers", "pandas", "matplotlib", "safetensors", "helm.models")


def test_help_of_every_command_loads_no_heavy_library():
    """`helm <command> --help` answers at once: building the parsers imports none of torch, sklearn, ..."""
    code = f"""
import contextlib, io, sys
from helm.cli import main
for command in {list(MODULES)!r}:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main([command, "--help"]) == 0, command
    assert "usage: helm " + command in out.getvalue(), command
print(" ".join(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == []


# command -> (the arguments it needs besides the aliases, the alias words, expected {dest: value})
ALIASES = {
    "embed": (["--run", "R", "--dataset", "d"], ["--data", "F", "--output", "O"], {"data_file": "F", "out": "O"}),
    "probe": (["--run", "R", "--dataset", "d"], ["--data", "F", "--output", "O", "--max_train", "5"],
              {"data_file": "F", "out": "O", "max_train": 5}),
    "baseline": (["--kind", "kmer-ridge", "--dataset", "d"], ["--data_file", "F", "--out", "O"],
                 {"data_file": "F", "out": "O"}),
    "annotate": (["--run", "R"], ["--data", "F", "--output", "O", "--num_rows", "7"],
                 {"data": "F", "out": "O", "num_rows": 7}),
    "generate": (["--run", "R"], ["--data", "F", "--output", "O", "--top_k", "3"],
                 {"reference": "F", "out": "O", "top_k": 3}),
    "cluster": (["--run", "R"], ["--data", "F", "--output", "O"], {"reference": "F", "out": "O"}),
    "tables": ([], ["--output", "O", "--tables_dir", "T"], {"out": "O", "tables_dir": "T"}),
    "fetch": (["--file", "f"], ["--output", "O"], {"dest": "O"}),
}  # fmt: skip


@pytest.mark.parametrize("command", list(ALIASES))
def test_inputs_and_outputs_are_named_alike(command):
    """--out / --output, --data for the input file, and every flag as --a-b and --a_b; `dest` names unchanged."""
    needed, words, expect = ALIASES[command]
    args = importlib.import_module(MODULES[command]).build_parser().parse_args([*needed, *words])
    assert {k: getattr(args, k) for k in expect} == expect


@pytest.mark.parametrize("command", ["probe", "generate", "tables"])
def test_a_bad_flag_is_one_line_and_exit_2(command, capsys):
    with pytest.raises(SystemExit) as exc:
        importlib.import_module(MODULES[command]).main(["--no-such-flag"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and err.startswith(f"helm {command}: error: ")


def test_json_tail_writes_the_json_or_one_line_and_exit_2(tmp_path, capsys):
    out = tmp_path / "sub" / "r.json"
    args = argparse.Namespace(out=str(out))
    record = EvalRecord("r", "t", 3, {"v": 1.5}, {"head": "mlp"}, {"seconds": 2.0})
    assert run_json_command("helm x", lambda a: record, args, lambda p: p["run"]) == 0
    expected = {"run": "r", "task": "t", "seed": 3, "metrics": {"v": 1.5}, "config": {"head": "mlp", "seconds": 2.0}}
    assert json.loads(out.read_text()) == expected and capsys.readouterr().out == f"r -> {out}\n"
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # written atomically: no temporary left

    def fails(_):
        raise InputError("data.csv: row 3\nhas no sequence")

    bad = tmp_path / "bad.json"
    with pytest.raises(SystemExit) as exc:
        run_json_command("helm x", fails, argparse.Namespace(out=str(bad)), str)
    assert exc.value.code == 2 and capsys.readouterr().err == "helm x: error: data.csv: row 3 has no sequence\n"
    assert not bad.exists()


def test_the_cli_returns_the_status_of_a_failed_command(tmp_path, capsys):
    """helm.cli.main gives a caller in Python the exit status (2) instead of raising SystemExit."""
    from helm.cli import main

    argv = ["fetch", "--file", "no-such.csv", "--mirror", str(tmp_path), "--output", str(tmp_path / "x.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("helm fetch: error: no-such.csv")
    assert main(["fetch", "--help"]) == 0

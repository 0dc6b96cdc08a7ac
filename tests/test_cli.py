"""One convention for every `helm` subcommand (helm/args.py): `--help` answers at once and imports no heavy
library, every multi-word flag has both spellings (`--a_b` and `--a-b`), and a user error is one line on stderr
with exit status 2: an unknown flag, a bad value and a missing input file alike."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from helm.cli import COMMANDS, main

HEAVY = ("torch", "lightning", "transformers", "sklearn", "scipy", "timm", "pandas", "matplotlib", "tokenizers")
HELP_SECONDS = 2.0  # the redesign's goal for `helm <command> --help` (a fresh interpreter, start-up included)

# argv (after the command) that fails on user input, and what the one line must name
BAD_INPUT = {
    "fetch": (["--file", "nope.txt", "--dest", "{tmp}/x"], "nope.txt"),
    "prepare": (["--input", "{tmp}/absent.txt", "--output", "{tmp}/p"], "absent.txt"),
    "train": (["--data_dir", "{tmp}/absent", "--output", "{tmp}/run"], "--data_dir"),
    "embed": (["--run", "{tmp}/absent", "--dataset", "mrfp", "--out", "{tmp}/f.safetensors"], "absent"),
    "probe": (["--run", "{tmp}/absent", "--dataset", "mrfp", "--out", "{tmp}/p.json"], "absent"),
    "baseline": (["--kind", "kmer-ridge", "--dataset", "no-such-set", "--out", "{tmp}/b.json"], "no-such-set"),
    "annotate": (["--run", "{tmp}/absent", "--out", "{tmp}/a.json"], "absent"),
    "generate": (["--run", "{tmp}/absent", "--reference", "{tmp}/absent.txt", "--out", "{tmp}/g.json"], "absent"),
    "cluster": (["--run", "{tmp}/absent", "--reference", "{tmp}/absent.txt", "--out", "{tmp}/c.json"], "absent"),
    "tables": (["--runs", "{tmp}/absent", "--out", "{tmp}/t.csv"], "absent"),
    "models": (["--vocab_size", "many"], "--vocab_size"),
    "export": (["{tmp}/absent", "{tmp}/out"], "absent"),
    "design": (["--run", "{tmp}/absent", "--protein", "MKV", "--out", "{tmp}/d"], "absent"),
    "design-bench": (["--run", "{tmp}/absent", "--prepared", "{tmp}/absent", "--out", "{tmp}/db"], "absent"),
}


def test_every_command_is_covered():
    assert set(BAD_INPUT) == set(COMMANDS)


def _help(command: str) -> tuple[dict, float]:
    """`helm <command> --help` in a fresh interpreter: its status, output and the heavy modules it imported."""
    code = (
        "import contextlib, io, json, sys\n"
        "from helm.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    status = main([{command!r}, '--help'])\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(json.dumps({'status': status, 'text': out.getvalue(), 'heavy': heavy}))\n"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout), time.perf_counter() - start


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_is_instant_and_lists_both_spellings(command):
    result, seconds = _help(command)
    assert result["status"] == 0 and result["heavy"] == [], result["heavy"]
    assert seconds < HELP_SECONDS, f"helm {command} --help took {seconds:.2f} s"
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]", result["text"]))
    multi = {f for f in flags if "_" in f[2:] or "-" in f[2:]}
    assert multi or command in ("models", "export", "fetch"), "no multi-word flag seen: the regex is broken"
    for flag in multi:
        for other in ("--" + flag[2:].replace("-", "_"), "--" + flag[2:].replace("_", "-")):
            assert other in flags, f"helm {command}: {flag} is listed but {other} is not"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unknown_flag_is_one_line_and_exit_2(command, tmp_path, capsys):
    argv = [] if command == "models" else BAD_INPUT[command][0]  # the required flags (models has none) are given
    argv = [word.format(tmp=tmp_path) for word in argv]
    assert main([command, *argv, "--no-such-flag", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"helm {command}: error:") and "--no-such-flag" in err[0], err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bad_input_is_one_line_naming_it_and_exit_2(command, tmp_path, capsys):
    argv, named = BAD_INPUT[command]
    assert main([command, *(word.format(tmp=tmp_path) for word in argv)]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(err) == 1 and err[0].startswith(f"helm {command}: error:") and named in err[0], err
    assert not (tmp_path / "run").exists() and not (tmp_path / "p").exists()  # nothing written


@pytest.mark.parametrize("spelling", ["--batch_size", "--batch-size"])
def test_both_spellings_set_the_same_field(spelling):
    from helm.train import parse_args

    assert parse_args([spelling, "8"]).data.batch_size == 8

"""README.md as written: every ```python block runs, unchanged, in a fresh
CPU-only process (no GPU, no interpreter: the path a new user's laptop
takes), and every ```bash command either runs (the CPU examples) or is
checked to exist (its module, script, test path or install extra) with
``--help``. Generic: blocks added to the README later are picked up."""
from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)


def blocks(lang: str) -> list[tuple[str, str]]:
    """(id, code) of every fenced block of ``lang``; the id is the heading
    above the block and its line number."""
    text = README.read_text()
    out = []
    for m in _FENCE.finditer(text):
        if m.group("lang") != lang:
            continue
        line = text.count("\n", 0, m.start()) + 1
        heading = ([h for h in re.findall(r"^#+ (.+)$", text[: m.start()], re.M)] or ["top"])[-1]
        out.append((f"{heading} (line {line})", textwrap.dedent(m.group("body"))))
    return out


def _env(tmp_path: pathlib.Path, **extra) -> dict:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TRITON_ATTN_CACHE_DIR=str(tmp_path / "cache"), **extra)
    env.pop("TRITON_INTERPRET", None)  # as a user runs it: no interpreter unless the snippet sets it
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def test_readme_has_the_blocks_this_test_expects():
    assert len(blocks("python")) >= 3 and len(blocks("bash")) >= 2


# --- python ------------------------------------------------------------------------

@pytest.mark.parametrize("code", [c for _, c in blocks("python")], ids=[i for i, _ in blocks("python")])
def test_python_block_runs_as_written_on_cpu(code, tmp_path):
    script = tmp_path / "snippet.py"
    script.write_text(code)
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"README snippet failed:\n{code}\n--- stderr:\n{r.stderr[-4000:]}"


# --- bash ---------------------------------------------------------------------------

#: Scripts a README command names as the user's own (not in this repository).
USER_SCRIPTS = {"train.py"}
#: Autotune presets: GPU-sized, only ``--help`` is run for those commands.
PRESETS = {"resnet50", "mobilenetv3", "efficientnet_b0"}


def commands() -> list[tuple[str, dict, list[str]]]:
    """(source line, env assignments, argv) of every command of every bash block."""
    out = []
    for _, code in blocks("bash"):
        for line in code.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            while tokens:
                cut = tokens.index("&&") if "&&" in tokens else len(tokens)
                cmd, tokens = tokens[:cut], tokens[cut + 1:]
                env = {}
                while cmd and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", cmd[0]):
                    key, _, value = cmd.pop(0).partition("=")
                    env[key] = value
                if cmd:
                    out.append((line.strip(), env, cmd))
    return out


def _help(argv: list[str], env: dict, tmp_path) -> None:
    r = subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, env=_env(tmp_path, **env), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "usage" in r.stdout.lower(), f"{' '.join(argv)} --help failed:\n{r.stderr[-3000:]}"


def _value(argv: list[str], flag: str):
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


@pytest.mark.parametrize("line, env, argv", commands(), ids=[c[0][:60] for c in commands()])
def test_bash_command_exists_or_runs(line, env, argv, tmp_path):
    prog, args = argv[0], argv[1:]
    if prog == "pip":
        assert args[:2] == ["install", "-e"], line
        extras = re.fullmatch(r"\.(?:\[(.*)\])?", args[2]).group(1) or ""
        declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        assert set(filter(None, extras.split(","))) <= set(declared), line
        return
    assert prog in ("python", "python3"), f"unknown command {prog!r} in the README: {line}"
    if args[0] == "-m":
        module, rest = args[1], args[2:]
        assert importlib.util.find_spec(module) is not None or (ROOT / module.replace(".", "/")).exists(), line
        if module == "pytest":
            paths = [a for a in rest if not a.startswith("-") and not a.isdigit()]
            assert all((ROOT / p.split("::")[0]).exists() for p in paths), line
            return
        shapes = _value(rest, "--shapes")
        if module == "triton_attn.autotune" and shapes and shapes not in PRESETS:
            _run_cpu_autotune(rest, env, tmp_path)  # a CPU example: run it for real
            return
        sub = [rest[0]] if rest and not rest[0].startswith("-") else []
        _help(["-m", module, *sub], env, tmp_path)
        return
    script = args[0]
    if script in USER_SCRIPTS:
        return
    assert (ROOT / script).is_file(), line
    _help([script], env, tmp_path)


def _run_cpu_autotune(rest: list[str], env: dict, tmp_path) -> None:
    import pandas as pd

    out = tmp_path / pathlib.Path(_value(rest, "--out") or "report.csv").name
    if "--out" in rest:
        rest = list(rest)
        rest[rest.index("--out") + 1] = str(out)
    else:
        rest = [*rest, "--out", str(out)]
    r = subprocess.run([sys.executable, "-m", "triton_attn.autotune", *rest], cwd=ROOT, env=_env(tmp_path, **env),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_csv(out, keep_default_na=False)
    assert len(df) and set(df.source) == {"tuned"}
    # The README promises that the candidates of this example compete.
    assert (df.n_configs > 1).all() and (df.runner_up != "").all(), df[["kernel", "n_configs", "runner_up"]]

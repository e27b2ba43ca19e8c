"""What a new user meets first: the package says (once) which path runs, the
modules' ``forward`` documents itself, the example script explains itself
and its report, and progress bars neither garble logs nor get garbled by
warnings."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import triton_attn

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _python(code: str, *, interpret: bool = False, timeout: int = 240, **env) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh CPU-only interpreter (no GPU, and the
    interpreter only when asked for)."""
    e = dict(os.environ, CUDA_VISIBLE_DEVICES="", **env)
    e.pop("TRITON_INTERPRET", None)
    if interpret:
        e["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=e, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


# --- which path runs: said once ------------------------------------------------

_RUN_TWICE = """
    import logging, torch
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import triton_attn
    se = triton_attn.SEModule(8)
    for _ in range(3):
        se(torch.randn(2, 8, 4, 4)).sum().backward()
    print(triton_attn.where_it_runs("cpu"))
"""


def test_cpu_pure_pytorch_path_is_said_once():
    r = _python(_RUN_TWICE)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("CPU tensors run the pure-PyTorch path") == 1, r.stderr
    assert "TRITON_INTERPRET=1" in r.stderr
    assert "TRITON_ATTN_AUTOTUNE" not in r.stderr
    assert "pure-PyTorch path" in r.stdout


def test_autotune_with_nothing_to_tune_is_said_once():
    r = _python(_RUN_TWICE, TRITON_ATTN_AUTOTUNE="1")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if "TRITON_ATTN_AUTOTUNE=1 is set but nothing can be tuned" in line]
    assert len(lines) == 1 and lines[0].startswith("WARNING"), r.stderr


def test_interpreter_path_says_nothing_and_where_it_runs_names_it():
    r = _python(_RUN_TWICE, interpret=True)
    assert r.returncode == 0, r.stderr
    assert "triton_attn:" not in r.stderr  # the kernels run: nothing to warn about
    assert "interpreter" in r.stdout
    assert "interpreter" in triton_attn.where_it_runs("cpu") or not triton_attn.INTERPRETED


def test_messages_stay_quiet_without_logging_configured():
    r = _python("""
        import torch, triton_attn
        triton_attn.SEModule(8)(torch.randn(1, 8, 2, 2))
    """)
    assert r.returncode == 0 and r.stderr == "", r.stderr  # INFO: shown only when asked for


# --- forward docstrings ------------------------------------------------------------

BLOCKS = [
    triton_attn.SEModule, triton_attn.EffectiveSEModule, triton_attn.EcaModule, triton_attn.CecaModule,
    triton_attn.CbamModule, triton_attn.LightCbamModule, triton_attn.SqueezeExcitation,
    triton_attn.EfficientNetSqueezeExcite, triton_attn.seed_compat.SEBlock, triton_attn.seed_compat.ECABlock,
    triton_attn.seed_compat.CBAMBlock,
]


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
def test_forward_has_its_own_docstring(cls):
    doc = cls.forward.__doc__ or ""
    assert doc and doc != nn.Module.forward.__doc__
    assert "[N, C, H, W]" in doc or "N x C" in doc
    assert "CUDA" in doc or "SEModule.forward" in doc or "EcaModule.forward" in doc


@pytest.mark.parametrize("cls", [triton_attn.SEModule, triton_attn.EcaModule, triton_attn.CbamModule], ids=lambda c: c.__name__)
def test_main_docstrings_say_what_runs_where(cls):
    doc = " ".join(cls.forward.__doc__.split())
    for words in ("CUDA tensors run", "CPU tensors run", "TRITON_INTERPRET=1", "pure-PyTorch", "torch.onnx.export",
                  "torch.fx", "fp32", "memory format", "Differentiable", "N = 0"):
        assert words in doc, words


# --- the example script ----------------------------------------------------------

def _example():
    import runpy

    return runpy.run_path(str(ROOT / "examples" / "convert_timm_model.py"))["main"]


def test_example_help_is_whole_sentences(capsys):
    with pytest.raises(SystemExit):
        _example()(["--help"])
    out = capsys.readouterr().out
    assert "same logits, same input gradients." in " ".join(out.split())
    assert "--model ecaresnet26t" in out and "(default seresnet18)" in " ".join(out.split())


def test_example_says_where_it_ran_and_when_nothing_was_found(capsys):
    pytest.importorskip("timm")
    errors = _example()(["--model", "resnet10t", "--size", "16", "--batch", "1"])
    out = capsys.readouterr().out
    assert "device cpu: the fused blocks run" in out or "device cuda" in out
    assert ("interpreter" in out) == triton_attn.INTERPRETED or "cuda" in out
    assert "no attention block (SE, ECA, CBAM, ...) was found" in out
    assert errors["logits"] == 0.0


def test_convert_report_when_nothing_is_found():
    _, report = triton_attn.convert(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
    assert "no attention block" in str(report)


# --- progress bars --------------------------------------------------------------

def test_cli_output_to_a_file_has_no_bar_escape_codes(tmp_path, capsys, monkeypatch):
    """stderr captured (not a terminal): no bar, no carriage returns, and a
    summary line with the units instead."""
    from triton_attn.autotune.__main__ import main

    monkeypatch.setenv("TRITON_ATTN_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["--shapes", "1,8,4,4", "--blocks", "se", "--dtype", "fp32", "--out", str(tmp_path / "r.csv")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b[" not in err, repr(err)
    assert "kernel keys" in err and ("wall-clock ms" in err or "ms per launch" in err)


_BAR_SCRIPT = """
    import sys, time, warnings
    from triton_attn.tuning import tuner
    with tuner.bar_safe_output():
        for i in tuner.progress(range(4), desc="tuning", mininterval=0):
            time.sleep(0.05)
            if i == 1:
                warnings.warn("corrupted cache, ignored")
    print("summary line", file=sys.stderr)
"""


def test_warnings_print_above_the_bar_on_a_terminal():
    """On a terminal (a pty here) the bar draws, a warning is written on a
    line of its own (the bar cleared first, then redrawn), and the finished
    bar is cleared instead of left behind twice."""
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_BAR_SCRIPT)], stderr=slave, stdout=subprocess.DEVNULL, env=env, cwd=ROOT)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    out = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, out
    assert "tuning:" in out  # the bar did draw
    before, warning, after = out.partition("UserWarning: corrupted cache, ignored")
    assert warning, out
    line_start = before.rsplit("\r", 1)[-1].rsplit("\n", 1)[-1]
    assert "tuning:" not in line_start  # the warning starts its own line, not glued to a bar
    tail = after.rsplit("summary line", 1)[0]
    assert "100%" not in tail.rsplit("\r", 2)[-1], "the finished bar stays on screen"

"""Autotuning: config spaces and pruning, tuning keys, the persistent cache
(corrupted, stale, unwritable, concurrent) and the CLI report. On CPU the
tuner times candidates under the interpreter; shapes stay tiny."""
import json
import os
import subprocess
import sys
import textwrap
import warnings

import pandas as pd
import pytest
import torch

import triton_attn
from triton_attn import autotune
from triton_attn.launch import config as launch_config
from triton_attn.tuning import cache, registry, spaces, table
from triton_attn.autotune.__main__ import main as cli_main
from triton_attn.tuning.config import LaunchConfig
from triton_attn.tuning.key import KEY_FIELDS, key_to_str, pow2_bucket, tune_key
from triton_attn.autotune.report import COLUMNS
from triton_attn.tuning.table import Entry

from helpers import assert_close

pytestmark = pytest.mark.skipif(
    not triton_attn.INTERPRETED and not torch.cuda.is_available(), reason="needs Triton (GPU or interpreter)"
)

# 1x8x16x16 NCHW has several tiles and splits to choose from; 2x8x4x4 has
# one config left after pruning. Both run in milliseconds interpreted.
SHAPES = "1,8,16,16;2,8,4,4"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """A private cache directory, tuning off, nothing left in memory after."""
    d = tmp_path / "cache"
    monkeypatch.setenv("TRITON_ATTN_CACHE_DIR", str(d))
    monkeypatch.delenv("TRITON_ATTN_AUTOTUNE", raising=False)
    autotune.reset()
    yield d
    autotune.reset()


def _env(cache_dir):
    """This process's environment (TRITON_INTERPRET=1 without a GPU, set by
    conftest), with the private cache directory."""
    env = dict(os.environ, TRITON_ATTN_CACHE_DIR=str(cache_dir))
    env.pop("TRITON_ATTN_AUTOTUNE", None)
    return env


def _x(shape, device, channels_last=False):
    x = torch.randn(shape, device=device)
    return x.to(memory_format=torch.channels_last) if channels_last else x


def _pool_mean(x):
    from triton_attn.launch.channel_pool import channel_pool

    return channel_pool(x, True, False)[0]


def _cache_warnings(caught):
    return [w for w in caught if "autotune cache" in str(w.message)]


# -- spaces and pruning ------------------------------------------------------

def test_pruning_clamps_blocks_to_the_problem():
    p = spaces.Problem(N=2, C=24, HW=49, chan_contiguous=True, num_sms=None, interpreted=True)
    for space in (spaces.REDUCTION, spaces.TILE):
        cands = space.candidates(p)
        assert cands and len(set(cands)) == len(cands)
        assert max(c.block_c for c in cands) <= 32 and max(c.block_hw for c in cands) <= 64
        # the interpreter ignores warps and stages: not varied there
        assert {c.num_warps for c in cands} == {4} and {c.num_stages for c in cands} == {None}


def test_pruning_drops_empty_and_useless_splits():
    p = spaces.Problem(N=1, C=8, HW=256, chan_contiguous=False, num_sms=None, interpreted=True)
    cands = spaces.REDUCTION.candidates(p)
    for c in cands:  # every split gets at least one H*W block, stored as it really runs
        assert c.split <= -(-256 // c.block_hw)
        assert spaces.effective_split(256, c.block_hw, c.split) == c.split
    assert {c.split for c in cands} == {1, 2, 4}
    # a GPU whose SMs N * C-blocks already fill gets no split at all
    full = spaces.Problem(N=128, C=2048, HW=49, chan_contiguous=True, num_sms=132, interpreted=False)
    gpu = spaces.REDUCTION.candidates(full)
    assert {c.split for c in gpu} == {1}
    # num_stages is not varied: no loop is software-pipelined on sm_90, so it changes no code
    assert {c.num_warps for c in gpu} == {4, 8} and {c.num_stages for c in gpu} == {None}
    # a lone sample on a big GPU does try splits, within a bounded space
    lone = spaces.Problem(N=1, C=256, HW=3136, chan_contiguous=True, num_sms=132, interpreted=False)
    many = spaces.REDUCTION.candidates(lone)
    assert max(c.split for c in many) > 8 and len(many) < 400


def test_effective_split_matches_the_launcher():
    # nominal 32 over 49 blocks of 64 runs as 25 splits of 2 blocks
    assert spaces.effective_split(3136, 64, 32) == 25
    assert spaces.effective_split(100, 64, 4) == 2


def test_key_buckets():
    assert [pow2_bucket(n) for n in (1, 2, 3, 4, 5, 64, 65)] == [1, 2, 4, 4, 8, 64, 128]
    a = tune_key(3, 96, 49, "channels_last", torch.bfloat16, "mean")
    assert a == tune_key(4, 96, 64, "channels_last", torch.bfloat16, "mean")
    assert a != tune_key(4, 97, 64, "channels_last", torch.bfloat16, "mean")  # C is exact
    assert a != tune_key(5, 96, 64, "channels_last", torch.bfloat16, "mean")
    assert len(a) == len(KEY_FIELDS) == 6


def test_source_hash_follows_the_kernel_source():
    h = registry.get("channel_pool").source_hash
    assert h == registry.source_hash(registry.get("channel_pool").kernel)
    assert h != registry.get("channel_scale").source_hash


# -- launch path -------------------------------------------------------------

def test_tuning_is_off_by_default(device, cache_dir):
    with autotune.recording() as records:
        _pool_mean(_x((2, 8, 4, 4), device))
    assert records == [] and not cache_dir.exists()


def test_tuned_choice_persists_and_buckets(device, cache_dir):
    x = _x((3, 8, 4, 4), device)
    with autotune.tuning(), autotune.recording() as records:
        _pool_mean(x)
    assert [(r.kernel, r.source) for r in records] == [("channel_pool", "tuned")]
    assert json.loads((cache_dir / "autotune.json").read_text())["format"] == cache.FORMAT

    autotune.reset()  # as a new process would: from the file only
    for n, expect in ((4, ["cache"]), (5, [])):  # N=4 shares N=3's bucket, N=5 does not
        x = _x((n, 8, 4, 4), device)
        with autotune.recording() as records:
            m = _pool_mean(x)
        assert [r.source for r in records] == expect
        torch.testing.assert_close(m, x.double().mean((2, 3)).float())


def test_cached_config_is_used_and_correct(device, cache_dir):
    """A split config written to the cache drives the launch (split pooling
    and ECA-style scale) and still gives the reference result."""
    x = _x((1, 8, 16, 16), device)
    key = tune_key(1, 8, 256, "nchw", torch.float32, "mean+max")
    section = table.section_for("channel_pool", x.device)
    cfg = LaunchConfig(block_c=4, block_hw=64, num_warps=4, split=3)
    entry = Entry(cfg, 1.0, None, None, 1)
    assert cache.write_entries(cache.cache_path(), section, {key_to_str(key): entry.to_json()})
    from triton_attn.launch.channel_pool import channel_pool

    with autotune.recording() as records:
        mean, amax = channel_pool(x, True, True)
    assert [(r.kernel, r.source, r.entry.config) for r in records] == [("channel_pool", "cache", cfg)]
    torch.testing.assert_close(mean, x.double().mean((2, 3)).float())
    torch.testing.assert_close(amax, x.amax((2, 3)))
    # a test override still beats the cache
    with launch_config.override(block_c=2, block_hw=4, split=2), autotune.recording() as records:
        channel_pool(x, True, True)
    assert records == []


def test_tuned_se_forward_backward_matches_reference(device):
    from triton_attn.reference import EagerSEModule

    se = triton_attn.SEModule(8).to(device)
    ref = EagerSEModule(8, se.fc1.out_channels).to(device)
    ref.load_state_dict(se.state_dict())
    x = _x((1, 8, 16, 16), device).requires_grad_()
    xr = x.detach().double().requires_grad_()
    with autotune.tuning(), autotune.recording() as records:
        y = se(x)
        dy = torch.randn_like(y)
        y.backward(dy)
    assert {r.kernel for r in records} == {"channel_pool", "channel_scale", "channel_gate_grad", "channel_scale_backward"}
    assert any(r.entry.n_configs > 1 for r in records)
    yr = ref.double()(xr)
    yr.backward(dy.double())
    assert_close(y, yr, torch.float32, msg="y")
    assert_close(x.grad, xr.grad, torch.float32, msg="dx")


# -- cache robustness --------------------------------------------------------

@pytest.mark.parametrize("content", ["{not json", '{"format": 1, "sections": 7}', '{"format": 0, "sections": []}'])
def test_bad_cache_file_one_warning_then_rewritten(device, cache_dir, content):
    cache_dir.mkdir()
    (cache_dir / "autotune.json").write_text(content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with autotune.tuning():
            for n in (1, 2, 3):
                _pool_mean(_x((n, 8, 4, 4), device))
    assert len(_cache_warnings(caught)) == 1
    data = json.loads((cache_dir / "autotune.json").read_text())
    assert data["format"] == cache.FORMAT and len(data["sections"][0]["entries"]) == 3


def test_bad_entry_and_stale_section_are_ignored(device, cache_dir):
    x = _x((2, 8, 4, 4), device)
    key = key_to_str(tune_key(2, 8, 16, "nchw", torch.float32, "mean"))
    current = table.section_for("channel_pool", x.device)
    stale = dict(current, source_hash="0" * 16, entries={key: Entry(LaunchConfig(8, 16, 4), 1.0, None, None, 1).to_json()})
    bad = dict(current, entries={key: {"config": {"block_c": 3, "block_hw": 16, "num_warps": 4}, "ms": 1, "n_configs": 1}})
    cache_dir.mkdir()
    (cache_dir / "autotune.json").write_text(json.dumps({"format": cache.FORMAT, "sections": [stale, bad]}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with autotune.recording() as records:
            torch.testing.assert_close(_pool_mean(x), x.double().mean((2, 3)).float())
        assert records == []  # neither entry used: heuristic
        with autotune.tuning():
            _pool_mean(x)
    assert len(_cache_warnings(caught)) == 1
    sections = json.loads((cache_dir / "autotune.json").read_text())["sections"]
    assert [s["source_hash"] for s in sections] == [current["source_hash"]]  # the stale one was dropped


@pytest.mark.parametrize("how", ["dir_is_a_file", "cache_file_is_a_dir"])
def test_unusable_cache_dir_works_without_persisting(device, tmp_path, monkeypatch, how):
    # Path tricks rather than chmod: root (CI containers) ignores permissions.
    (tmp_path / "blocker").write_text("")
    d = tmp_path / "blocker" / "cache" if how == "dir_is_a_file" else tmp_path / "c"
    if how == "cache_file_is_a_dir":
        (d / "autotune.json").mkdir(parents=True)
    monkeypatch.setenv("TRITON_ATTN_CACHE_DIR", str(d))
    autotune.reset()
    x = _x((2, 8, 4, 4), device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with autotune.tuning(), autotune.recording() as records:
            m = _pool_mean(x)
            _pool_mean(_x((1, 8, 4, 4), device))
    assert [r.source for r in records] == ["tuned", "tuned"]
    assert len(_cache_warnings(caught)) == 1
    torch.testing.assert_close(m, x.double().mean((2, 3)).float())
    with autotune.recording() as records:  # kept in memory for this process
        _pool_mean(x)
    assert [r.source for r in records] == ["cache"]


def test_two_processes_tuning_at_once_leave_valid_json(cache_dir):
    script = textwrap.dedent("""
        import sys, torch, triton_attn
        from triton_attn import autotune
        from triton_attn.tuning import cache, table
        from triton_attn.tuning.config import LaunchConfig
        from triton_attn.launch.channel_pool import channel_pool
        c = int(sys.argv[1])
        dev = torch.device("cuda" if torch.cuda.is_available() and not triton_attn.INTERPRETED else "cpu")
        with autotune.tuning():
            for n in (1, 2, 3, 5):
                channel_pool(torch.randn(n, c, 4, 4, device=dev), True, False)
        # and a burst of raw writes, to make the two writers overlap
        section = table.section_for("channel_pool", dev)
        entry = table.Entry(LaunchConfig(8, 16, 4), 1.0, None, None, 1).to_json()
        for i in range(25):
            assert cache.write_entries(cache.cache_path(), section, {f"{c}|{i}|1|nchw|fp32|burst": entry})
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(c)], env=_env(cache_dir), stderr=subprocess.PIPE, text=True)
        for c in (8, 16)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    data = json.loads((cache_dir / "autotune.json").read_text())
    entries = data["sections"][0]["entries"]
    assert len(data["sections"]) == 1 and len(entries) == 2 * (4 + 25)
    assert not [f for f in os.listdir(cache_dir) if f.endswith(".tmp")]


# -- CLI ---------------------------------------------------------------------

def test_cli_report_then_cache_in_a_new_process(cache_dir, tmp_path, capsys):
    out = tmp_path / "report" / "autotune.csv"
    argv = ["--shapes", SHAPES, "--blocks", "se,eca", "--dtype", "fp32", "--layout", "nchw"]
    assert cli_main([*argv, "--out", str(out)]) == 0
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == COLUMNS
    assert set(df.source) == {"tuned"}
    assert set(df.kernel) == {"channel_pool", "channel_scale", "channel_gate_grad", "channel_scale_backward"}
    assert len(df) == len(df[["kernel", *KEY_FIELDS]].drop_duplicates()) == 2 * 5  # 2 shapes x 5 kernel variants
    several = df[df.n_configs > 1]
    assert len(several) and (several.runner_up != "").all()
    assert (pd.to_numeric(several.runner_up_ms) >= several.ms).all()
    assert "| kernel | C | HW_bucket |" in capsys.readouterr().out

    out2 = tmp_path / "again.csv"
    env = _env(cache_dir)
    reexec = triton_attn.INTERPRETED and not torch.cuda.is_available()
    if reexec:
        env.pop("TRITON_INTERPRET", None)  # without a GPU the CLI switches the interpreter on by itself
    r = subprocess.run(
        [sys.executable, "-m", "triton_attn.autotune", *argv, "--out", str(out2)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert r.returncode == 0, r.stderr
    assert not reexec or "re-running under Triton's interpreter" in r.stderr
    df2 = pd.read_csv(out2, keep_default_na=False)
    assert set(df2.source) == {"cache"}
    assert df2.drop(columns="source").equals(df.drop(columns="source"))
    assert "| cache |" in r.stdout


def test_cli_survives_a_corrupted_cache(cache_dir, tmp_path, capsys):
    cache_dir.mkdir()
    (cache_dir / "autotune.json").write_bytes(b"\x00\xff garbage")
    out = tmp_path / "r.csv"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli_main(["--shapes", "2,8,4,4", "--blocks", "eca", "--dtype", "bf16", "--out", str(out)]) == 0
    assert len(_cache_warnings(caught)) == 1
    df = pd.read_csv(out)
    assert set(df.source) == {"tuned"} and set(df.dtype) == {"bf16"} and set(df.layout) == {"channels_last"}
    json.loads((cache_dir / "autotune.json").read_text())


def test_cli_tunes_every_cbam_kernel(tmp_path, capsys):
    out = tmp_path / "cbam.csv"
    assert cli_main(["--shapes", "1,4,4,4", "--blocks", "cbam", "--dtype", "fp32", "--out", str(out)]) == 0
    assert set(pd.read_csv(out).kernel) == {
        "channel_pool", "spatial_stats", "cbam_scale", "cbam_gate_grad", "cbam_stats_grad", "cbam_scale_backward",
    }


def test_cli_refuses_presets_and_bad_input_on_cpu(capsys):
    if torch.cuda.is_available() and not triton_attn.INTERPRETED:
        pytest.skip("presets run on a GPU")
    assert cli_main(["--shapes", "resnet50"]) == 2
    assert "GPU-sized" in capsys.readouterr().err
    assert cli_main(["--shapes", "1,2,3"]) == 2
    assert "N,C,H,W" in capsys.readouterr().err
    assert cli_main(["--shapes", "1,8,4,4", "--blocks", "se,nope"]) == 2
    assert "nope" in capsys.readouterr().err

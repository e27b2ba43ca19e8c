"""Compiles recorded kernel launches with Triton's real compiler for a GPU
target, with no GPU present (run as a subprocess WITHOUT TRITON_INTERPRET, so
the kernels are JITFunctions). Reads a JSON list of launches on stdin (each
with its signature, constexprs, launch options and the indices of the
arguments Triton's JIT marks divisible by 16), prints one JSON result per
launch and target: for sm_90 also registers, spills and shared memory (from
ptxas -v on the PTX), theoretical occupancy and the widest global load and
store in the PTX."""
import importlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

# Hopper (sm_90) per-SM limits.
_REGS_PER_SM, _MAX_WARPS, _MAX_CTAS, _SMEM_PER_SM, _SMEM_RESERVED = 65536, 64, 32, 233472, 1024


def occupancy(regs: int, num_warps: int, shared: int) -> float:
    """Theoretical occupancy (resident warps / 64): registers are allocated
    per warp in units of 256, per thread in multiples of 8."""
    per_warp = math.ceil(max(regs, 1) * 32 / 256) * 256
    by_regs = (_REGS_PER_SM // per_warp) // num_warps
    by_smem = _SMEM_PER_SM // (shared + _SMEM_RESERVED) if shared else _MAX_CTAS
    ctas = min(_MAX_CTAS, by_regs, by_smem, _MAX_WARPS // num_warps)
    return ctas * num_warps / _MAX_WARPS


def _ptxas():
    here = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    return here if os.path.exists(here) else "ptxas"


def resources(ptx: str, arch: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        out = subprocess.run([_ptxas(), "-v", f"--gpu-name=sm_{arch}a" if arch == 90 else f"--gpu-name=sm_{arch}", path,
                              "-o", os.path.join(d, "k.cubin")], capture_output=True, text=True)
    text = out.stdout + out.stderr
    regs = re.search(r"Used (\d+) registers", text)
    spills = [int(v) for v in re.findall(r"(\d+) bytes spill (?:stores|loads)", text)]
    return {"regs": int(regs.group(1)) if regs else -1, "spill_bytes": max(spills) if spills else 0}


def widest(ptx: str, op: str) -> int:
    """Bytes of the widest global ``op`` (ld / st) instruction in the PTX."""
    best = 0
    for vec, bits in re.findall(rf"{op}\.global(?:\.[a-zA-Z0-9:_]+)*?(?:\.v(\d))?\.[bfus](\d+)", ptx):
        best = max(best, (int(vec) if vec else 1) * int(bits) // 8)
    return best


def compile_one(item):
    launch, arch = item
    module = importlib.import_module(launch["module"])
    fn = getattr(module, launch["name"])
    sig = dict(launch["signature"])
    for name in launch["constexprs"]:
        sig[name] = "constexpr"
    attrs = {(i,): [["tt.divisibility", 16]] for i in launch.get("divisible", [])}
    src = ASTSource(fn, sig, dict(launch["constexprs"]), attrs)
    base = {"arch": arch, "name": launch["name"], "tag": launch.get("tag", ""), "constexprs": launch["constexprs"],
            "signature": launch["signature"], "num_warps": launch["options"].get("num_warps", 4)}
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(launch["options"]))
    except Exception as e:  # reported, not raised: the test shows every failure at once
        return {**base, "ok": False, "error": f"{type(e).__name__}: {str(e)[-2000:]}"}
    ptx = compiled.asm["ptx"]
    result = {**base, "ok": True, "ptx_lines": ptx.count("\n")}
    if arch == 90:
        res = resources(ptx, arch)
        shared = int(getattr(compiled.metadata, "shared", 0) or 0)
        result.update(res, shared=shared, occupancy=occupancy(res["regs"], base["num_warps"], shared),
                      max_load_bytes=widest(ptx, "ld"), max_store_bytes=widest(ptx, "st"))
    return result


def main():
    """stdin: {"<arch>": [launch, ...], ...} (or a plain list, for sm_90)."""
    plan = json.load(sys.stdin)
    if isinstance(plan, list):
        plan = {"90": plan}
    items = [(launch, int(arch)) for arch, launches in plan.items() for launch in launches]
    with ProcessPoolExecutor(max_workers=2) as pool:
        for result in pool.map(compile_one, items):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

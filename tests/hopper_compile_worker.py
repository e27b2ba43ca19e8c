"""Compiles recorded kernel launches with Triton's real compiler for a GPU
target, with no GPU present (run as a subprocess WITHOUT TRITON_INTERPRET, so
the kernels are JITFunctions). Reads a JSON list of launches on stdin, prints
one JSON result per launch."""
import importlib
import json
import sys
from concurrent.futures import ProcessPoolExecutor

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource


def compile_one(item):
    launch, arch = item
    module = importlib.import_module(launch["module"])
    fn = getattr(module, launch["name"])
    sig = dict(launch["signature"])
    for name in launch["constexprs"]:
        sig[name] = "constexpr"
    src = ASTSource(fn, sig, dict(launch["constexprs"]))
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(launch["options"]))
        return {"ok": True, "arch": arch, "name": launch["name"], "ptx_lines": compiled.asm["ptx"].count("\n")}
    except Exception as e:  # reported, not raised: the test shows every failure at once
        return {"ok": False, "arch": arch, "name": launch["name"], "constexprs": launch["constexprs"],
                "signature": launch["signature"], "error": f"{type(e).__name__}: {str(e)[-2000:]}"}


def main():
    launches = json.load(sys.stdin)
    archs = [int(a) for a in sys.argv[1:]] or [90]
    items = [(launch, arch) for launch in launches for arch in archs]
    with ProcessPoolExecutor(max_workers=2) as pool:
        for result in pool.map(compile_one, items):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

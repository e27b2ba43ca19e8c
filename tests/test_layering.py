"""The package's folders are layers of the data path, and imports only point
down: compat -> modules -> functional -> ops -> launch -> tuning -> kernels.
The shared leaves (runtime, validation, activations, reference) may be used
by any layer and use only each other and the device code. The autotune CLI
sits on top. Read from the source, nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "triton_attn"
KERNELS = PACKAGE.parent / "kernels"

RANK = {"autotune": 7, "compat": 6, "modules": 5, "functional": 4, "ops": 3, "launch": 2, "tuning": 1, "kernels": 0}
LEAVES = {"runtime", "validation", "activations", "reference"}


def _layer(parts: tuple[str, ...]) -> str:
    """'launch' for triton_attn.launch.channel_pool, 'runtime' for triton_attn.runtime, '' for the package root."""
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path, module: tuple[str, ...]):
    """(line, imported module as a tuple of names) for every triton_attn import of a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = base + tuple(node.module.split(".")) if node.module else base
            else:
                target = tuple((node.module or "").split("."))
            if target[:1] != ("triton_attn",):
                continue
            if len(target) == 1:  # from triton_attn import x: x is a layer or leaf module
                for alias in node.names:
                    yield node.lineno, target + (alias.name,)
            else:
                yield node.lineno, target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                target = tuple(alias.name.split("."))
                if target[:1] == ("triton_attn",):
                    yield node.lineno, target


def _files():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = tuple(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, parts


def test_top_level_is_few_modules_and_layer_folders():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py"))
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert modules == sorted(["__init__", "functional", *LEAVES]), modules
    assert folders == sorted(set(RANK) - {"functional", "kernels"}), folders


def test_imports_point_down_the_data_path():
    bad = []
    for path, parts in _files():
        here = _layer(parts)
        if here == "":  # the package root re-exports the public API of every layer
            continue
        for line, target in _imports(path, parts):
            there = _layer(target)
            if there in ("", here):
                continue
            if here in LEAVES:
                ok = there in LEAVES or there == "kernels"
            else:
                ok = there in LEAVES or RANK[there] < RANK[here]
            if not ok:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({here}) imports {'.'.join(target)} ({there})")
    assert not bad, "imports that point up or sideways:\n" + "\n".join(bad)


def test_kernels_are_device_code_only():
    for path in sorted(KERNELS.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    assert not name.startswith(("torch", "triton_attn")), f"{path.name} imports {name}"

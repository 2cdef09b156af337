"""The layers of `elth`: every import (function-local ones included) points down or sideways, never up.

This list is the one place the layer order is written (docs/architecture.md draws it). A module's
layer is that of its longest listed prefix; modules of the same layer may import each other.
"""
import ast
from pathlib import Path

import elth

#: Bottom first. Each entry is a layer: the module prefixes that belong to it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("elth.errors", "elth.limits", "elth.console", "elth.plugins"),
    ("elth.models", "elth.data", "elth.masks", "elth.files", "elth.runs"),
    ("elth.tickets", "elth.training", "elth.flops"),
    ("elth.sparsity",),
    ("elth.elastic", "elth.dataset_move", "elth.methods", "elth.open_lth"),
    ("elth.workflows",),
    ("elth.analysis", "elth.experiments"),
    ("elth.commands", "elth.cli", "elth.__main__"),
)

SRC = Path(elth.__file__).parent


def layer_of(module: str) -> int | None:
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(text: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every `elth` import in `text` (the source of `module`), at any depth:
    module level, functions, classes, conditionals."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            # `from elth import x`: x may be a module of its own
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names if is_module(f"{target}.{a.name}")]
    return sorted((line, m) for line, m in out if m == "elth" or m.startswith("elth."))


def is_module(name: str) -> bool:
    path = SRC.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def upward(module: str, imports: list[tuple[int, str]]) -> list[str]:
    here = layer_of(module)
    return [f"{line}: {module} (layer {here}) imports {target} (layer {layer_of(target)})"
            for line, target in imports if layer_of(target) is not None and layer_of(target) > here]


def test_every_module_has_a_layer():
    missing = [module_name(p) for p in SRC.rglob("*.py") if module_name(p) != "elth" and layer_of(module_name(p)) is None]
    assert not missing, f"modules in no layer (add them to LAYERS): {missing}"


def test_no_import_runs_upward():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = module_name(path)
        if module == "elth":
            continue
        imports = imports_in(path.read_text(), module, path.name == "__init__.py")
        found += [f"{path.relative_to(SRC.parent)}:{u}" for u in upward(module, imports)]
    assert not found, "imports from a lower layer to a higher one:\n" + "\n".join(found)


def test_the_check_sees_function_local_and_relative_imports():
    text = (
        "import torch\n"
        "from elth.masks import count\n"
        "from . import loop\n"
        "def f():\n"
        "    from elth.experiments.aggregate import aggregate\n"
        "    from ..workflows import imp\n"
    )
    imports = imports_in(text, "elth.training.step")
    assert imports == [(2, "elth.masks"), (3, "elth.training"), (3, "elth.training.loop"),
                       (5, "elth.experiments.aggregate"), (6, "elth.workflows"), (6, "elth.workflows.imp")]
    assert [u.split(":")[0] for u in upward("elth.training.step", imports)] == ["5", "6", "6"]

"""Import direction between the subpackages and RDKit kept out of the training path and the sampler."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "moldiff"

# package -> moldiff packages it may import
ALLOWED = {
    "utils": set(),
    "chem": {"utils"},
    "data": {"utils", "chem"},
    "models": {"utils"},
    "diffusion": {"utils"},
    "sampling": {"diffusion", "utils", "data", "chem"},
    "metrics": {"data", "utils", "chem"},
    "training": {"utils", "chem", "data", "models", "diffusion", "sampling", "metrics", "config"},
    "cli": {"utils", "chem", "data", "models", "diffusion", "sampling", "metrics", "training", "config", "generate"},
}
#: top-level modules: ``config`` (the packaged defaults) is a leaf; ``generate`` (sampling settings to
#: molecules) sits above ``training``; ``api`` and ``bench`` above everything but ``cli``.
TOP_LEVEL = {
    "config": set(),
    "generate": ALLOWED["training"] | {"training"},
    "bench": ALLOWED["training"] | {"training"},
}


def moldiff_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("moldiff."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("moldiff.")}
    return out


def test_import_direction():
    bad = []
    for sub, allowed in ALLOWED.items():
        for f in (PKG / sub).rglob("*.py"):
            for dep in moldiff_imports(f) - allowed - {sub}:
                bad.append(f"{f.relative_to(PKG.parent)} imports moldiff.{dep}")
    for name, allowed in TOP_LEVEL.items():
        for dep in moldiff_imports(PKG / f"{name}.py") - allowed:
            bad.append(f"moldiff/{name}.py imports moldiff.{dep}")
    assert not bad, "\n".join(bad)


def test_training_and_sampler_do_not_import_rdkit():
    code = (
        "import sys\n"
        "import moldiff.training.module, moldiff.training.checkpoint, moldiff.data.datamodule, moldiff.cli.train\n"
        "import moldiff.sampling.sampler, moldiff.models.denoiser, moldiff.diffusion.joint\n"
        "bad = [m for m in sys.modules if m == 'rdkit' or m.startswith('rdkit.')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sources_compile_without_warnings():
    """No invalid escape sequences (a SyntaxWarning from Python 3.12 on, e.g. ``\\s`` in a non-raw docstring)."""
    import warnings

    root = PKG.parent
    for f in [*PKG.rglob("*.py"), *(root / "scripts").glob("*.py")]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            compile(f.read_text(), str(f), "exec")

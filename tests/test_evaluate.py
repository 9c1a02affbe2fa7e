"""suite/evaluate/ sits below the trial: it evaluates a model at its levels wherever the model comes
from (the end of a trial, stored weights), so it never imports the code that trains or drives trials."""
import ast
from pathlib import Path

import suite

PACKAGE = Path(suite.__file__).parent / "evaluate"
NEVER = ("trial", "protocols", "driver", "sweep", "halving", "search", "run", "tracking", "analysis", "bench", "stored",
         "reevaluate")
CLI = "__main__.py"  # python -m suite.evaluate: a command line above every layer, which no module imports


def imported(path: Path) -> set[str]:
    """The suite modules a file imports, as dotted names below suite (relative imports resolved)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:  # a file of suite/evaluate/: one dot is suite.evaluate, two are suite
                base = ".".join(["suite", "evaluate"][:3 - node.level] + ([node.module] if node.module else []))
            out |= {base, *(f"{base}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m.removeprefix("suite.") for m in out if m.startswith("suite.")}


def test_the_evaluation_package_imports_nothing_above_it():
    files = sorted(f for f in PACKAGE.glob("*.py") if f.name != CLI)
    assert {f.name for f in files} >= {"__init__.py", "metrics.py", "ood.py", "compact.py", "latency.py", "level.py",
                                       "levels.py"}
    for f in files:
        bad = {m for m in imported(f) if m.split(".")[0] in NEVER}
        assert not bad, f"{f.name} imports {sorted(bad)}"
    assert imported(PACKAGE / "__init__.py") == set()  # the protocols import evaluate.metrics: no circle through level.py
    assert imported(PACKAGE / "metrics.py") == set()

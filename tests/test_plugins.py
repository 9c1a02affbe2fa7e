"""A user's method and protocol, each with a setting, named in $BPB_PLUGINS: without a change to
suite's files they appear in --help, expand in a grid and reach the report, like the built-ins."""
import os
import subprocess
import sys
import textwrap

import pytest
from test_methods import PLUGIN as METHOD
from test_protocols import PLUGIN as PROTOCOL

GRID = """\
description: plug-ins beside a built-in
fixed: {hidden: [32], epochs: 1, train_subset: 1000, val_size: 500, lr: 1.0e-2, sparsities: [0, 0.5], compile: false}
grid:
  - {method: [randsign], scale: [0.1], protocol: [inverse], inverse_top: [true, false]}
  - {method: [sgd], protocol: [oneshot]}
"""

REPORT = """\
import sys
from mlflow.tracking import MlflowClient
from suite import tracking
from suite.analysis import report
from suite.analysis.load import load
from suite.config import load_grid
from suite.trial import run_trial

uri = f"sqlite:///{sys.argv[1]}/mlflow.db"
client = MlflowClient(uri)
exp_id = client.create_experiment("plugins", artifact_location=f"{sys.argv[1]}/art")
for cfg in load_grid(sys.argv[1] + "/grid.yaml").trials:
    tracking.log_result_locally(client, exp_id, run_trial(cfg), {"device": "cpu"})
print(report.build(load("plugins", uri), __import__("pathlib").Path(sys.argv[1]) / "report").read_text())
"""


@pytest.fixture
def plugin_env(tmp_path):
    (tmp_path / "my_plugins.py").write_text(METHOD + PROTOCOL.replace("from dataclasses import dataclass\n", ""))
    (tmp_path / "grid.yaml").write_text(GRID)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ["PYTHONPATH"]]),
            "BPB_PLUGINS": "my_plugins"}


def run(env, *args, timeout=120):
    out = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow  # two CLIs, each importing torch and the registry
def test_plugins_appear_in_help_and_in_a_grid(plugin_env, tmp_path):
    help_text = " ".join(run(plugin_env, "-m", "suite.trial", "--help").split())
    assert "--scale V Magnitude of every weight" in help_text
    assert "--inverse-top V Prune the highest scores first" in help_text
    table = run(plugin_env, "-m", "suite.run", "--grid", str(tmp_path / "grid.yaml"), "--dry-run")
    assert table.count("RandSign 0.1 inverted") == 2 and "3 trials" in table, table


@pytest.mark.slow
def test_plugins_reach_the_report(plugin_env, tmp_path):
    (tmp_path / "make_report.py").write_text(textwrap.dedent(REPORT))
    md = run(plugin_env, str(tmp_path / "make_report.py"), str(tmp_path), timeout=600)
    assert "RandSign 0.1 inverted" in md and "SGD" in md

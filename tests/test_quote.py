"""Quoted tables (suite.analysis.quote): a block equals the table computed by hand from the runs file's
metrics, a changed number fails --check naming the block, a bad spec is one clear error before anything
is written, and the repository's READMEs agree with their committed runs files."""
import re
from pathlib import Path

import pytest

from suite.analysis import quote, runsfile

ROOT = Path(__file__).resolve().parent.parent
# label -> (label_order, seed -> {level: test accuracy}); every run MNIST, one-shot
ACC = {"SGD": (0, {0: {"p00": 0.98, "p50": 0.97, "p90": 0.90}, 1: {"p00": 0.96, "p50": 0.97, "p90": 0.80}}),
       "BBB": (1, {0: {"p00": 0.97, "p50": 0.94, "p90": 0.92}, 1: {"p00": 0.95, "p50": 0.96, "p90": 0.90}})}
# mean ± std (ddof=1) of the pairs above, by hand: e.g. SGD at 90 %: (0.90 + 0.80) / 2, |0.90 - 0.80| / sqrt(2)
EXPECTED = [["label", "0 %", "90 %"],
            ["SGD", "**0.9700 ± 0.0141 (n=2)**", "0.8500 ± 0.0707 (n=2)"],
            ["BBB", "0.9600 ± 0.0141 (n=2)", "**0.9100 ± 0.0141 (n=2)**"]]
SPEC = "runs.parquet level test_acc mnist columns=0,90"


def record(label: str, order: int, seed: int, dataset: str, acc: dict[str, float], collapsed: bool = False):
    tags = {"grid_key": f"{label}-{dataset}-{seed}", "label": label, "method": label.lower(), "dataset": dataset,
            "seed": str(seed), "label_order": str(order), "baseline": str(label == "SGD").lower(),
            "protocol": "oneshot", "git_commit": "test", "device": "cpu", "collapsed": str(collapsed).lower()}
    return runsfile.RunRecord(f"{label}{dataset}{seed}", tags["grid_key"], "FINISHED", 1, 2 + seed, tags,
                              {"epochs": "2"}, [(f"test_acc_{lv}", 0, 0, v) for lv, v in acc.items()]
                              + [("train_wall_s", 0, 0, 10.0 + seed)])


def write_runs(path: Path, acc=ACC) -> None:
    runs = [record(label, order, seed, "mnist", a) for label, (order, seeds) in acc.items() for seed, a in seeds.items()]
    runs.append(record("SGD", 0, 0, "fmnist", {"p00": 0.1}, collapsed=True))
    runsfile.write(runsfile.RunsExport("tiny", runs, status_counts={"FINISHED": len(runs)}), path)


def readme(folder: Path, *specs: str) -> Path:
    blocks = "\n\n".join(f"<!-- table: {s} -->\n<!-- end table -->" for s in specs)
    path = folder / "README.md"
    path.write_text(f"# Tiny\n\nThe syntax, not a block:\n\n```\n<!-- table broken\n```\n\n{blocks}\n\nProse.\n")
    return path


def table_in(text: str) -> list[list[str]]:
    """The cells of the markdown table(s) in text, header first, separator rows left out."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    return [r for r in rows if not all(set(c) <= set(":-") for c in r)]


@pytest.fixture
def folder(tmp_path):
    write_runs(tmp_path / "runs.parquet")
    return tmp_path


def test_write_puts_the_hand_computed_table_in_the_block(folder, capsys):
    path = readme(folder, SPEC)
    assert quote.main(["--check", str(path)]) == 1     # an empty block is stale
    assert quote.main(["--write", str(path)]) == 0
    text = path.read_text()
    block = text.split(f"<!-- table: {SPEC} -->")[1].split("<!-- end table -->")[0]
    assert table_in(block) == EXPECTED
    assert text.startswith("# Tiny\n") and text.endswith("\n\nProse.\n")   # the rest of the file is kept
    capsys.readouterr()
    assert quote.main(["--check", str(path)]) == 0
    assert "1 table(s) in 1 file(s) match" in capsys.readouterr().out


def test_filters_other_kinds_and_the_collapsed_footnote(folder):
    path = readme(folder, "runs.parquet level test_acc mnist rows=BBB columns=90,50", "runs.parquet level test_acc fmnist",
                  'runs.parquet cost mnist columns="total epochs,s / epoch"')
    assert quote.main(["--write", str(path)]) == 0
    bbb, fmnist, cost = path.read_text().split("<!-- end table -->")[:3]
    # 2 epochs, one-shot (no retraining); 10 and 11 s of training: 5.25 ± 0.35 s per epoch
    assert table_in(cost) == [["", "total epochs", "s / epoch"], ["SGD", "2", "5.25 ± 0.35 (n=2)"],
                              ["BBB", "2", "5.25 ± 0.35 (n=2)"]]
    # the report's column order; a lone row has no "best"
    assert table_in(bbb) == [["label", "50 %", "90 %"], ["BBB", "0.9500 ± 0.0141 (n=2)", "0.9100 ± 0.0141 (n=2)"]]
    assert table_in(fmnist) == [["label", "0 %"], ["SGD", "0.1000 † (1 seed)"]]
    assert "† at chance: collapsed." in fmnist


def test_a_changed_number_fails_check_naming_the_block(folder, capsys):
    path = readme(folder, "runs.parquet level test_acc fmnist", SPEC)
    assert quote.main(["--write", str(path)]) == 0
    line = path.read_text().splitlines().index(f"<!-- table: {SPEC} -->") + 1
    path.write_text(path.read_text().replace("0.8500 ± 0.0707", "0.8510 ± 0.0707"))
    capsys.readouterr()
    assert quote.main(["--check", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:{line}: the table ({SPEC}) differs" in out
    assert "-| SGD" in out and "0.8510" in out and "+| SGD" in out
    assert f"fix: python -m suite.analysis.quote --write {path}" in out
    assert "1 of 2 table(s)" in out and ":1: " not in out      # the other block is current
    # new data: the block follows it (SGD at 90 %: 0.90 and 0.70 -> 0.80 ± 0.1414)
    acc = {**ACC, "SGD": (0, {0: ACC["SGD"][1][0], 1: {**ACC["SGD"][1][1], "p90": 0.70}})}
    write_runs(folder / "runs.parquet", acc)
    assert quote.main(["--write", str(path)]) == 0
    assert ["SGD", "**0.9700 ± 0.0141 (n=2)**", "0.8000 ± 0.1414 (n=2)"] in table_in(path.read_text())


@pytest.mark.parametrize("spec,error", [
    ("runs.parquet levels test_acc mnist", "unknown kind 'levels'; write <!-- table: RUNS.parquet KIND"),
    ("runs.parquet level test_acc", "level takes METRIC DATASET; got test_acc"),
    ("runs.parquet level accuracy mnist", "no level table of 'accuracy'; metrics: test_acc"),
    ("runs.parquet level test_acc cifar", "has no dataset 'cifar'; it has fmnist, mnist"),
    ("runs.parquet level test_acc mnist columns=0,80", "no column '80 %' in the table; its columns: 0 %, 50 %, 90 %"),
    ("runs.parquet level test_acc mnist rows=L0", "no row 'L0' in the table; its rows: SGD, BBB"),
    ("runs.parquet cost mnist level=90", "unknown filter level=; the filters are rows, columns"),
    ("other.parquet level test_acc mnist", "no runs file"),
    ("runs.parquet width memory", "no width table of 'memory'; costs: step_time_ms, time_per_epoch_s, peak_mem_mb"),
    ("runs.parquet width step_time_ms", "has no run that logged a width table (runs of one width only)"),
    ("runs.parquet concurrency", "has no run that logged a concurrency table (no --concurrency sweep level finished)"),
    ("runs.parquet concurrency 2", "concurrency takes no arguments; got 2"),
])
def test_a_bad_spec_is_one_error_naming_its_line_before_anything_is_written(folder, capsys, spec, error):
    path = readme(folder, SPEC, spec)
    before = path.read_text()
    assert quote.main(["--write", str(path)]) == 2
    line = before.splitlines().index(f"<!-- table: {spec} -->") + 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:{line}: ") and error in err and len(err.splitlines()) == 1
    assert path.read_text() == before


@pytest.mark.parametrize("text,error", [
    ("<!-- table: runs.parquet cost mnist -->\n", ":1: no <!-- end table --> after this table comment"),
    ("<!-- end table -->\n", ":1: <!-- end table --> without a table comment"),
    ("x\n<!-- table runs.parquet cost mnist -->\n", ":2: not a table spec: write <!-- table: RUNS.parquet"),
    ("x\n<!--table: runs.parquet cost mnist-->\n", ":2: not a table spec: write <!-- table: RUNS.parquet"),
    ("<!-- table: runs.parquet cost mnist -->\n<!-- end table-->\n", ":2: write the end comment as <!-- end table -->"),
])
def test_unbalanced_or_malformed_comments(folder, capsys, text, error):
    path = folder / "README.md"
    path.write_text(text)
    assert quote.main(["--check", str(path)]) == 2
    assert error in capsys.readouterr().err


def test_the_repository_readmes_agree_with_their_runs_files(capsys):
    files = [ROOT / "README.md", *sorted(ROOT.glob("results/*/README.md"))]
    code = quote.main(["--check", *map(str, files)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert int(re.match(r"(\d+) table\(s\)", out.splitlines()[-1]).group(1)) > 0  # the results READMEs quote tables

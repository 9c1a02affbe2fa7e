"""Analysis over MLflow: tables, plots and the report (read-only), and runs files, the experiments' results
as data that outlive their store (results.py exports them and imports them back into a store).

Imports nothing from the training code (suite.* outside suite.analysis, but the stdlib-only
suite.preflight), so a report needs no torch."""

"""Read-only analysis over MLflow: tables, plots and the report.

Imports nothing from the training code (suite.* outside suite.analysis), so a report needs no torch."""

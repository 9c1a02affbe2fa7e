"""Read-only analysis over MLflow: tables, plots and the report. Imports nothing from suite/."""

"""The centralized benchmark: every method side by side, its report, plots and CLI.

Needs the ``bench`` extra (matplotlib, typer, rich).
"""

"""Molecule-set metrics (definitions: docs/metrics.md): plain functions, no Lightning.

Entry point: :func:`evaluate_molecules` (and :func:`format_table` for its printout).
"""

from moldiff.metrics.evaluate import PROTOCOL_VERSION, evaluate_molecules, format_table

__all__ = ["PROTOCOL_VERSION", "evaluate_molecules", "format_table"]

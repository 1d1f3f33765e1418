"""What is built on the library: the ``handgrad`` command line, training runs, compare, sweep,
report, plots, explain and verify. Imports flow one way: ``handgrad.app`` uses the library, and
nothing in the library imports ``handgrad.app``."""

__all__ = ["cli", "compare", "evaluation", "explain", "plots", "report", "sweep", "training", "verify"]

"""headsieve: what each attention head does, and which heads can be pruned.

The package holds the science as plain functions on arrays and tables; the Snakemake workflow in
``workflow/`` wires them together through the ``headsieve`` command line (``headsieve.cli``).
"""

__version__ = "0.1.0"

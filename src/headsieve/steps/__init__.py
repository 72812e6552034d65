"""One function per workflow rule: read the named inputs, compute with the science packages, write the named
outputs atomically.

A module per stage, named as ``workflow/rules/<stage>.smk``: :mod:`.data`, :mod:`.attention`, :mod:`.roles`,
:mod:`.pruning`, :mod:`.multilingual`, :mod:`.translation`, :mod:`.summary`.  Settings that travel together
are small frozen dataclasses (:mod:`.settings`).  The ``headsieve`` command line (:mod:`headsieve.cli`) parses
arguments and calls one step; notebook users call the steps directly (README, "From Python").

Modules here import only the standard library at import time (the science is imported inside each step), so
that the command line can pin torch's thread pools before torch is imported.
"""

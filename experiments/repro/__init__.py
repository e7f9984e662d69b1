"""The parts of reproduce.py: the protocols (which data, which split), the runs (one process per method
and seed, resumable) and the report (results.md, results.tex, figures)."""

"""dlutils' benchmark suite: ``python -m bench`` starts its own servers on 127.0.0.1,
generates the data, times dlutils and its peers on it and prints the ratios.

Only the standard library is imported here; every tool runs in a child process, so the
suite imports without any peer installed and says what is missing instead.
"""

"""Speed and memory measurements against a reference baseline (``python -m jobs.bench``).

``baseline`` re-creates how the original system read data and trained;
``loader``, ``training``, ``checkpoint``, ``ensemble`` and ``cuda`` each measure
one thing on the same generated data; ``run`` ties them into one report.
"""

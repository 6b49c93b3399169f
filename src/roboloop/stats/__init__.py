"""Statistics on numbers: intervals, exact tests, multiplicity, sequential comparisons.

Pure functions and small value objects over counts and scores; nothing here reads a
catalog, a workspace or a simulator, so every stage (analyze, evaluate, report, the
benchmarks) can call it with plain numbers.

* :mod:`roboloop.stats.intervals`: the Wilson score interval of a rate and Newcombe's
  intervals for a difference of two rates (independent or paired samples).
* :mod:`roboloop.stats.exact`: exact two-sided tests of two rates (McNemar for paired
  outcomes, Fisher for independent ones).
* :mod:`roboloop.stats.multiplicity`: Holm's step-down adjustment of a family of p-values.
* :mod:`roboloop.stats.sequential`: the anytime-valid paired comparison (a confidence
  sequence by betting), its fixed-n baseline, sample sizes and the driver that runs it
  cell by cell.
"""

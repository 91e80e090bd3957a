"""Benchmarks of `axes_lib` against peer libraries (repeng, steering-vectors) and naive loops.

`python -m benchmarks.run` (or `make bench`) times activation extraction, response-mean extraction
and steered generation in one process on one embedded model and one prompt set, checks that the
methods agree, and writes `artifacts/bench/results.json`. Not part of `make test`.
"""

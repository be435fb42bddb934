"""Batch scoring with the release serving an environment (`python -m pipeline batch`, docs/batch.md).

`source` finds and checks the input (CSV or Parquet, a file or a folder of parts), `scoring` turns one
Arrow batch into scores, rejects and drift counts with the service's own parser, session and bins, and
the two engines run it: `embedded` streams chunks in this process, `spark` maps it over a DataFrame.
`release` finds the version holding alias `<env>` and checks it as the service does; `parity` compares
a sample with the service's answers. The stage (pipeline/stages/batch.py) ties them together.
"""

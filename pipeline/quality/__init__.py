"""Live quality: what the service served (the capture), joined with the labels that arrived later.

`join` groups captured rows per model version with their labels, `estimate` is the CBPE estimate from
the served probabilities before labels arrive, `verdict` judges a version with the environment's gate rows,
`gauges` writes the Prometheus text the service's metrics port appends, `report` the per-day table and
chart, `labels_file` reads a file of labels for `pipeline feedback`, `replay` turns captured rows back
into rows for the load test, the parity check and the drift check (`--from-capture`).
"""

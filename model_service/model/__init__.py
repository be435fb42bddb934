"""The model a worker serves: the served model and its inference logic (served.py), the onnxruntime session
(runtime.py), the fallback behind a circuit breaker (breaker.py) and the drift counters (drift.py)."""

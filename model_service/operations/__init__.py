"""Running it: settings (settings.py), auth (auth.py), request metrics (metrics.py), JSON logs (logs.py) and
W3C trace context with optional OTLP spans (tracing.py)."""

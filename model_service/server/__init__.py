"""Process and transport: the worker's state (worker.py), the ASGI middleware that serves the raw routes and
wraps every request (middleware.py), uvicorn's HTTP protocol with head limits and read deadlines (http.py),
the workers' event loop (event_loop.py) and the metrics port's own process (metrics_server.py)."""

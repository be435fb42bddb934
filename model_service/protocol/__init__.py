"""What goes over the wire: the route table (routes.py), request rows to checked arrays (schemas.py), errors
with their HTTP status and JSON form (errors.py), the v2 binary tensor data extension (v2_binary.py) and the
OpenAPI document (openapi.py)."""

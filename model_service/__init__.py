"""Reference serving app: one ONNX model behind a small, fast Starlette service.

`python -m model_service --model-dir DIR` runs it; `create_app(settings)` builds it for tests. Importing the
package has no side effects: the model loads in the app's lifespan.
"""

"""Tests of the ``tensorguard`` command and of the base install it runs from."""

# Top-level packages that only the extras (train, he, registry, pipeline, service) install.
EXTRAS_ONLY = (
    "torch", "transformers", "tokenizers", "peft", "safetensors", "onnx", "onnxscript",
    "onnxruntime", "numpy", "tenseal", "dagster", "dagster_webserver", "dagster_postgres",
    "sqlalchemy", "alembic", "fastapi", "uvicorn", "jwt", "starlette",
)  # fmt: skip

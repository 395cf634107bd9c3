"""The project's version, in one place: pyproject.toml reads it (`[tool.setuptools.dynamic]`), `imgidx.__version__`
re-exports it, and the service and export manifests report it."""

__version__ = "0.1.0"

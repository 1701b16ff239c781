"""The DenseNAS control plane: REST API, job state machine, dispatcher (FastAPI + SQLAlchemy)."""

__version__ = "0.1.0"

"""Every MLflow call of the project lives in this package: runs (runs.py), the model registry (registry.py), the pyfunc model (pyfunc.py)."""

from pipeline.tracking.runs import Run, RuntimeSettings, TrackingError, check_store, check_tracking, flatten, tracking_uri

__all__ = ["Run", "RuntimeSettings", "TrackingError", "check_store", "check_tracking", "flatten", "tracking_uri"]

"""ferry: migrate TF1 `.meta` graphs + name-based checkpoints to verified Keras 3 SavedModels."""

import os

__version__ = "0.1.0"

# Parity must measure the conversion, not the kernel library: oneDNN's fused kernels in the eager
# runtime differ from a TF1 Session run by up to ~1e-2 on some CPUs (see docs/design.md). The setting
# must be fixed before TensorFlow is imported, so every ferry entry point imports this package
# first. A value set by the user wins and is recorded with each run.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# An unreachable MLflow server fails a call in seconds, not minutes (ferry then journals the records).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Prefect's temporary (ephemeral) server needs more than its default 20 s to start on a busy machine
# (ferry.prefect_api), and its telemetry heartbeat only adds a "database is locked" traceback there.
from ferry.prefect_api import STARTUP_TIMEOUT_SECONDS, STARTUP_TIMEOUT_VARIABLE

os.environ.setdefault(STARTUP_TIMEOUT_VARIABLE, str(STARTUP_TIMEOUT_SECONDS))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# Parity measures the conversion for the same reason: Grappler's arithmetic optimizer is off wherever
# ferry runs TensorFlow. It regroups adds inside a `tf.function` (verify's compiled forward, the reloaded
# SavedModel), which moved tf_slim resnet_v1_101 7.6e-5-1e-4 normwise from its TF1 Session (0.0 with it
# off; the Session gives the same either way). `ferry.keras3.run` applies it on import
# (`tf.config.optimizer`); each model's MLflow run records it.
GRAPPLER_OPTIONS: dict[str, bool] = {"arithmetic_optimization": False}

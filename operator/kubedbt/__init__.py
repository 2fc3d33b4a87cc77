"""kubedbt: run each dbt invocation of an Airflow task as one Kubernetes Job.

The package is layered: `kubedbt.core` is pure (spec, naming, rendering), `kubedbt.io` talks to
Kubernetes, and `kubedbt.airflow` is the thin Airflow glue. Importing `kubedbt` itself pulls in the
pure core only, so the results sidecar and the kubectl plugin never load Airflow.
"""

from kubedbt.core.errors import InvalidSpecError, KubedbtError
from kubedbt.core.naming import RunIdentity
from kubedbt.core.render import render_job, render_results_configmap
from kubedbt.core.spec import DbtRunSpec

__version__ = "0.1.0"

__all__ = [
    "DbtRunSpec",
    "InvalidSpecError",
    "KubedbtError",
    "RunIdentity",
    "__version__",
    "render_job",
    "render_results_configmap",
]

"""The I/O layer: everything that talks to the Kubernetes API, with one retry policy.

Imports only from `kubedbt.core`; never from Airflow, so the sidecar image stays small.
"""

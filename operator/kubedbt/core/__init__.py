"""The pure layer: no network, no clock, no Airflow, no Kubernetes client.

Everything here turns values into values, so it is tested with fast unit tests and golden files.
"""

"""The Airflow layer: DbtJobOperator and DbtJobTrigger, thin glue over the layers below."""

from kubedbt.airflow.operator import DbtJobOperator
from kubedbt.airflow.trigger import DbtJobTrigger

__all__ = ["DbtJobOperator", "DbtJobTrigger"]

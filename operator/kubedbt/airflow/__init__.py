"""The Airflow layer: DbtJobOperator and DbtJobTrigger, thin glue over the layers below."""

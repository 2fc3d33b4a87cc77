"""`kubectl dbt`: look at kubedbt runs from a terminal, and render them without a cluster.

A kubectl plugin (the `kubectl-dbt` executable; the same code is the `kubedbt` command). It reads
the current kubeconfig context and namespace the way kubectl does and talks to the cluster with the
async client through kubedbt.io, one API client per invocation. What it shows comes from the pure
layer, the same functions the operator uses: run states from Job conditions, results decoded from
the run's ConfigMap, outcomes classified from the evidence the operator would gather. It imports
nothing from Airflow, so it installs with the package's core dependencies only.
"""

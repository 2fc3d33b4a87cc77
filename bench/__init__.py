"""Benchmark of kubedbt's run tracking against the cncf provider's KubernetesJobTrigger."""

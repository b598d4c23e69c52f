"""The newsrec HTTP API: serves recommendation lists from the online store, and nothing else."""

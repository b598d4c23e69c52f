"""Configuration, metrics and shared HTTP plumbing of the serving API."""

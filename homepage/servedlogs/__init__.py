"""Served page logs: the format, simulation on the synthetic world, position-bias correction,
page-model training from logs, and replay of a policy against logged pages."""

"""Offline evaluation of rankers: metrics, peer baselines from other libraries, and the temporal protocol."""

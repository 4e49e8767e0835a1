"""Row generators: the ranker contract, the registry and the built-in rankers."""

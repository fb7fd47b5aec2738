"""Training, evaluation, the registry and model health; the ``winback`` command line."""

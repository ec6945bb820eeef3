"""Experiment plugins: the SDK third parties code against, and the built-in experiments."""

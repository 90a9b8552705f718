"""Data loading, splits, transforms and synthetic data sets."""

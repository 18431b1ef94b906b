"""Dataset files: safe loading, validation, synthetic data, importers, OOD re-partition."""

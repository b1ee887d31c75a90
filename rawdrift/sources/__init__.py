"""Where raw data comes from: ``synthetic`` (embedded default); the on-disk format is in ``store``."""

"""Preset config files (YAML), shipped with the package."""

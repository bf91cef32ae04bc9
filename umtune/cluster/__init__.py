"""Connecting to and launching on Ray clusters; checks of cluster YAML files."""

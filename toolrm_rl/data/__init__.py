"""Data layer: records, loaders, source adapters and the synthesis pipeline (imports only the core)."""

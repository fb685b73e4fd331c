"""BentoML HTTP service over exported SavedModels; it reads only the artifact contract (signatures + metadata.json)."""

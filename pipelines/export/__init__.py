"""Export: the graphs a SavedModel holds, and atomic versioned artifacts."""

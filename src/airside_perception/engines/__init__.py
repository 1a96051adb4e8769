"""Engine store: versioned model directories, their manifests, and the active-version state."""

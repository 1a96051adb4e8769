"""Classical baseline: RANSAC ground, clustering, occupancy (CPU only, no learning)."""

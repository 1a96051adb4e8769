"""Task pipelines: engines with their pre- and post-processing, the host that runs them, the trust monitor."""

"""Engine updates: staging, validation against golden clouds, the swap, the rollback watch."""

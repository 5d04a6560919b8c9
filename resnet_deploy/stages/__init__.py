"""The stage contract every stage shares: the Reference and the stage plumbing."""

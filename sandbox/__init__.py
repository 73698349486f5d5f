"""Local stand-ins for the outside world (not deployed to production)."""

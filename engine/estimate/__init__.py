"""Live size and memory estimate (filled in below)."""

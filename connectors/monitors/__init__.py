"""Monitors: components that watch a system bizbus depends on and report it as metrics (no records)."""

"""Differential safety suite: application sequences direct vs through thaw (see harness.py, /tmp/spec.md)."""

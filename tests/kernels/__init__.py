"""Kernel tests (Triton vs torch references)."""

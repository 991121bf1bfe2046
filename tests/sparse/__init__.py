"""Sparse tensor, neighbour map, conv module and spatial op tests."""

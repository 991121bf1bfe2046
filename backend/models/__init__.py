"""Neural networks of TRELLIS.2: flow DiTs, the sparse-structure decoder and the SC-VAEs."""

"""Training TRELLIS.2 networks: data toolkit, procedural data, trainers and release export."""

"""Model loading, head gates (masking) and physical head pruning."""

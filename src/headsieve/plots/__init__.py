"""Figures, one module per figure family; every figure is drawn from artifacts (tables), never models."""

"""Head pruning: classification data, metrics, fine-tuning, strategies, importance, evaluation, compensation."""

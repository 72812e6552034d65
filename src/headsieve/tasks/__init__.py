"""Classification tasks: encoded data and batches, metrics, seeded fine-tuning with exact resume and its
checkpoints.  Used by pruning, roles (fine-tuned models) and the multilingual study alike."""

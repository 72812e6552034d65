"""Multilingual analyses: head roles per language, role-map similarity against language facts,
per-language prunability (relative drops by pruned layer and layer band), relative drops by share of heads
pruned at random, and how much fine-tuning moves each layer (linear CKA)."""

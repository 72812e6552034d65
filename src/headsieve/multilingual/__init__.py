"""Multilingual analyses: head roles per language, role-map similarity against language facts, and
per-language prunability (relative drops by pruned layer and layer band)."""

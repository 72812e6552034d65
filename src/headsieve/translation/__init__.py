"""Encoder-decoder (translation) models: head masking and pruning by attention kind, BLEU/chrF on the
parallel UD PUD treebanks, strategies by kind and layer, gate importance and head roles (issue #8)."""

"""Readers and writers: corpora, attention dumps, atomic file output."""

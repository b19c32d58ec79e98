"""Structured extraction: schemas, constrained decoding, the page pipeline, checks and exports."""

"""Kalibr: outcome-aware LLM routing."""

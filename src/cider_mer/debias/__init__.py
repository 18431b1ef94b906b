"""Debiasing that can be selected honestly: bias-only model and groups, trained bias branch (docs/debiasing.md)."""

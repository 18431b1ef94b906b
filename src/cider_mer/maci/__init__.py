"""MACI: the model-agnostic causal module (MCM head, statistics, counterfactual text, tau)."""

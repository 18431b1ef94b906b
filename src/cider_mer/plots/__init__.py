"""Pictures of a trained run: embeddings under missing data (Fig. 8) and MACI's correction (Fig. 9)."""

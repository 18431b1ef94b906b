"""Text encoders (BERT family) and their feature cache."""

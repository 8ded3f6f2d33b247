"""Analysis tools: per-token probabilities of training targets (paper Fig. 2) and the report's plots."""

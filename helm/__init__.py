"""helm-mrna: hierarchical codon language models (HELM, ICLR 2025) — data, models, losses, training, evaluation."""

__version__ = "0.1.0"

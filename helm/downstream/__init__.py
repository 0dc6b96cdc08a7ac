"""Downstream evaluation: property prediction, baselines, region annotation, generation, synonymous clustering."""

"""edge_ssl.train: data sources, the rotation pretext, the fine-tune, and the run directory."""

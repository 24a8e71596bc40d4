"""Binding a modality to a frozen image embedding space (train, evaluate, search, the bind demo)."""

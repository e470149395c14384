"""Shared building blocks of the methods: backbone, heads, momentum encoders, memory bank,
permutation sets, distributed helpers, hyperparameter declarations. Pure PyTorch."""

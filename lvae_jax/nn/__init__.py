"""Layers and blocks with PyTorch semantics on NHWC data."""

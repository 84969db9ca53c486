"""The quality benchmark's parts (issue #4): data, models, training, samplers, metrics, tables.

Everything here is eager PyTorch + diffusers; only the sampling rows use the taylorseer backend.
"""

"""Bridges to the libraries that drive a compiled model (today: diffusers pipelines)."""

from .diffusers import attach_to_diffusers_model

__all__ = ["attach_to_diffusers_model"]

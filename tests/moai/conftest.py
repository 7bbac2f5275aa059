"""Fixtures for the MOAI export tests: a tiny model and its LoRA adapter."""

from tests.optimize.tiny_model import eval_batches, tiny_adapter_dir, tiny_base_model_dir

__all__ = ["eval_batches", "tiny_adapter_dir", "tiny_base_model_dir"]

"""Training: site data, the base model, LoRA adapters, evaluation and determinism.

Import the submodules directly (``tensorguard.training.dataset``,
``tensorguard.training.base_model``, ``tensorguard.training.lora``,
``tensorguard.training.determinism``); this package does not import torch on its own.
"""

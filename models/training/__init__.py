"""Training LoRA adapters for the base model (needs the `train` extra: torch, transformers, peft).

The on-device path never imports this package: devices run GGUF adapters in llama.cpp.
"""

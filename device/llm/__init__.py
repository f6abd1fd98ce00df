"""The on-device LLM runtime: llama.cpp engine, beam search, lean-vocabulary tokenization, prompts."""

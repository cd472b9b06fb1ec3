"""GPT-NeoX (the Pythia architecture) and its checkpoints: Hugging Face folders, the hub, and
GPT-NeoX / DeepSpeed training checkpoints."""

from debias.model.gpt_neox import GPTNeoX, GPTNeoXConfig

__all__ = ["GPTNeoX", "GPTNeoXConfig"]

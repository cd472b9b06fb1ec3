"""debias: rerun the Pythia gender-bias intervention properly.

Sub-packages, in pipeline order:
  stream    the pre-tokenized Pythia training stream (MMIDIDX), steps <-> rows, windows
  rewrite   audited, length-preserving pronoun rewrite of a stream window
  model     GPT-NeoX (SDPA / FlashAttention) and Hugging Face / GPT-NeoX checkpoints
  train     continue training from the matching checkpoint (torch or DeepSpeed)
  evaluate  CrowS-Pairs, WinoBias, LAMBADA, perplexity, manipulation check, statistics
  report    report files, plots and comparisons across runs
  demo      the embedded miniature Pythia that `make intervene` runs on a CPU
"""

__version__ = "0.1.0"

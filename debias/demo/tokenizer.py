"""A byte-level BPE tokenizer for the demo corpus, built like GPT-NeoX-20B's.

Same pipeline as the tokenizer every Pythia model uses (docs/facts.md §3): NFC normalizer, byte-level
pre-tokenizer without a prefix space, byte-level decoder, `<|endoftext|>` = 0 and `<|padding|>` = 1.
Only the vocabulary is learned from the demo corpus, so the rewriter builds its pronoun tables
from this file exactly as it does from GPT-NeoX-20B's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from debias.errors import UserError
from debias.io import atomic_output

SPECIAL_TOKENS = ("<|endoftext|>", "<|padding|>")  # ids 0 and 1, as in GPT-NeoX-20B

# Forms the demo needs as single tokens, as they are in GPT-NeoX-20B; rarer spellings
# (ALL-CAPS, " Himself") may split, as some do in GPT-NeoX-20B, and the rewriter handles that.
REQUIRED_SINGLE_TOKENS = (
    " he", " she", " him", " her", " his", " hers", " himself", " herself",
    "He", "She", "His", "Her", " He", " She", " His", " Her",
)


def new_tokenizer() -> Tokenizer:
    """An untrained BPE with GPT-NeoX-20B's normalizer, pre-tokenizer, post-processor and decoder."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True)
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_path: str | os.PathLike) -> Path:
    """Learn a byte-level BPE of `vocab_size` ids from `texts`; write tokenizer.json atomically."""
    if vocab_size < 512:
        raise UserError(f"tokenizer.vocab_size={vocab_size}: too small for the 256 byte symbols plus "
                        f"whole-word pronouns; use 1024 or more")
    tokenizer = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is encodable
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer = _with_neox_decoder(tokenizer)
    check_pronoun_tokens(tokenizer, source=f"tokenizer trained with vocab_size={vocab_size}")
    out_path = Path(out_path)
    with atomic_output(out_path) as tmp:
        tokenizer.save(str(tmp))
    return out_path


def _with_neox_decoder(tokenizer: Tokenizer) -> Tokenizer:
    """The decoder serialised exactly as GPT-NeoX-20B's. `decoders.ByteLevel` ignores its
    arguments and always writes add_prefix_space=true, which decoding never reads but other
    tools compare; so the JSON is set directly."""
    spec = json.loads(tokenizer.to_str())
    spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return Tokenizer.from_str(json.dumps(spec))


def single_token_id(tokenizer: Tokenizer, text: str) -> int | None:
    """The id when `text` encodes to exactly one token, else None."""
    ids = tokenizer.encode(text).ids
    return ids[0] if len(ids) == 1 else None


def check_pronoun_tokens(tokenizer: Tokenizer, source: str) -> None:
    """Special ids as in GPT-NeoX-20B and the common pronoun forms one token each, or a UserError."""
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != expected_id:
            raise UserError(f"{source}: {token} must have id {expected_id} as in GPT-NeoX-20B")
    split = [form for form in REQUIRED_SINGLE_TOKENS if single_token_id(tokenizer, form) is None]
    if split:
        raise UserError(f"{source}: pronoun forms {split} are not single tokens; raise "
                        f"data.demo.tokenizer.vocab_size or data.demo.tokenizer.train_documents")

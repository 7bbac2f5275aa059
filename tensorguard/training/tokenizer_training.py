"""Train a byte-level BPE tokenizer locally with the Hugging Face ``tokenizers`` library.

Byte-level BPE can encode any UTF-8 text without an unknown token. Digits are split
one per token so numbers (doses, lab values, dates) are composed rather than
memorised. Every encoded text is wrapped as ``<s> ... </s>``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from tensorguard.training.errors import TrainingError

PAD_TOKEN = "<pad>"  # noqa: S105 - a vocabulary entry, not a credential
BOS_TOKEN = "<s>"  # noqa: S105 - a vocabulary entry, not a credential
EOS_TOKEN = "</s>"  # noqa: S105 - a vocabulary entry, not a credential
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)


def train_bpe_tokenizer(
    texts: Sequence[str], vocab_size: int, model_max_length: int
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for ``transformers``."""
    if not texts:
        raise TrainingError("cannot train a tokenizer on an empty corpus; add corpus texts")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}",
        special_tokens=[
            (BOS_TOKEN, _token_id(tokenizer, BOS_TOKEN)),
            (EOS_TOKEN, _token_id(tokenizer, EOS_TOKEN)),
        ],
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
    )


def _token_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise TrainingError(f"the trained tokenizer lacks the special token {token!r}")
    return int(token_id)

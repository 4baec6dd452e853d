"""The user's files that the documentation's examples name, made by ``llamabench examples [DIR]``.

Every page of the docs runs on a fresh clone once this has written, in the working folder:

- ``my-model/``: a tiny random LlamaForCausalLM (seed 0), as ``save_pretrained`` writes a checkpoint;
- ``out/checkpoint-100/``: another random one (seed 1), the first checkpoint of a training run;
- ``out/checkpoint-200/``: checkpoint-100 after ``TRAIN_STEPS`` steps of Adam on ``TRAINING_TEXT``, so its perplexity
  on English lines (``valid.txt``) is lower;
- ``out/checkpoint-300/``: checkpoint-200 with its output layer scaled by ``DIVERGED_SCALE``, standing for a run that
  diverged: confident and wrong, its perplexity is higher on every line of ``valid.txt``;
- ``notes.txt`` (two lines), ``books/a.txt`` and ``books/b.txt`` (two lines each): text to score and a tiny corpus;
- ``valid.txt``: ``VALIDATION_LINES``, held-out lines for watching a training run;
- ``SmolLM2-135M-Instruct.Q4_1.gguf``: a link to the embedded model's file.

The models are 2-layer LLaMAs (hidden size 48) over a byte vocabulary: a few hundred KB each, made in seconds on a
CPU. Their numbers say nothing about language, only how llamabench reports them.
"""

from __future__ import annotations

from pathlib import Path

from llamabench.errors import LlamabenchError

NOTES = "The meeting moved to Tuesday.\nBring the slides and the budget.\n"
BOOKS = {
    "a.txt": "It was a bright cold day in April.\nThe clocks were striking.\n",
    "b.txt": "Call me Ishmael.\nSome years ago, never mind how long.\n",
}
TRAINING_TEXT = (
    "The train left the station a little after nine and ran along the river for most of the morning.\n"
    "She wrote the numbers on the board and asked the class which of them was the largest.\n"
    "When the rain stopped, the children went out to look for snails in the wet grass.\n"
    "He kept the old radio on the kitchen shelf and listened to the news every evening.\n"
    "The bakery on the corner sells bread in the morning and cakes in the afternoon.\n"
    "Most of the letters were about the weather, the garden and the price of coal.\n"
    "They walked to the top of the hill and sat on a bench to watch the boats in the bay.\n"
    "The report was late because the printer in the office had run out of paper again.\n"
)
VALIDATION_LINES = [
    "The bus was late again this morning.",
    "We planted tomatoes along the south wall of the garden.",
    "The library closes at six on Saturdays.",
    "He asked for a cup of tea and a slice of toast.",
    "The river was high after a week of rain.",
    "She found her keys in the pocket of her coat.",
    "The new bridge opens to traffic next month.",
    "Our neighbours painted their front door blue.",
    "The meeting ran over by half an hour.",
    "A cold wind came in from the sea at night.",
    "The shop on the corner sells fresh bread.",
    "They spent the summer walking in the hills.",
    "The old clock in the hall stopped at noon.",
    "He wrote a long letter to his sister in Canada.",
    "The children built a small boat out of wood.",
    "The price of coffee went up again this year.",
    "We waited for the train under the station roof.",
    "The garden was full of bees in the afternoon.",
    "She read the whole book in a single evening.",
    "The road to the village was closed for repairs.",
    "Snow fell on the mountains early this year.",
    "The team won the final match by two goals.",
    "He left the window open and the room grew cold.",
    "The market is busiest on Friday mornings.",
]
TRAIN_STEPS = 60
DIVERGED_SCALE = 8.0
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MADE = ("my-model", "out", "notes.txt", "books", "valid.txt", GGUF_NAME)


def byte_tokenizer():
    """A byte-level tokenizer (one token per UTF-8 byte) with <s>=256 and </s>=257, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab.update({"<s>": 256, "</s>": 257})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="</s>")


def tiny_llama(
    seed: int = 0, max_positions: int = 256, hidden_size: int = 48, intermediate_size: int = 96, vocab_size: int = 258
):
    """A randomly initialised 2-layer LlamaForCausalLM over the byte vocabulary (``vocab_size`` rows: more leave
    room for added tokens)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=257,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def train(model, tokenizer, text: str, steps: int, window: int = 64):
    """``steps`` full-batch Adam steps of next-token loss on ``text`` cut into ``window``-token pieces (seeded)."""
    import torch

    torch.manual_seed(0)
    ids = torch.tensor(tokenizer(text)["input_ids"])
    pieces = ids[: len(ids) // window * window].view(-1, window)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        model(input_ids=pieces, labels=pieces).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def write_examples(folder: Path) -> list[Path]:
    """Write the examples' files under ``folder`` (made if missing); refuses, before writing anything, a folder
    that already holds one of them. Returns the paths written (the GGUF last, a link)."""
    from llamabench.backends.loading.model_source import smollm2_gguf_path

    existing = [name for name in MADE if (folder / name).exists() or (folder / name).is_symlink()]
    if existing:
        raise LlamabenchError(
            f"examples: {folder / existing[0]} already exists; run `llamabench examples DIR` with a new folder DIR"
        )
    gguf = smollm2_gguf_path()
    import torch

    tokenizer = byte_tokenizer()
    first = tiny_llama(seed=1)
    written = [_save(tiny_llama(seed=0), tokenizer, folder / "my-model")]
    written.append(_save(first, tokenizer, folder / "out" / "checkpoint-100"))
    trained = train(first, tokenizer, TRAINING_TEXT, TRAIN_STEPS)
    written.append(_save(trained, tokenizer, folder / "out" / "checkpoint-200"))
    with torch.no_grad():
        trained.lm_head.weight.mul_(DIVERGED_SCALE)
    written.append(_save(trained, tokenizer, folder / "out" / "checkpoint-300"))
    (folder / "books").mkdir()
    texts = {"notes.txt": NOTES, "valid.txt": "\n".join(VALIDATION_LINES) + "\n"}
    texts.update({f"books/{name}": text for name, text in BOOKS.items()})
    for name, text in texts.items():
        (folder / name).write_text(text)
        written.append(folder / name)
    (folder / GGUF_NAME).symlink_to(gguf)
    return [*written, folder / GGUF_NAME]


def _save(model, tokenizer, folder: Path) -> Path:
    from transformers.utils import logging

    folder.mkdir(parents=True)
    logging.disable_progress_bar()  # one bar per file written: noise for a few hundred KB
    try:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    finally:
        logging.enable_progress_bar()
    return folder

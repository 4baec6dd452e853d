"""Text to token ids for a served model: the server's own ``/tokenize`` (so the ids are the served model's by
construction), or a local tokenizer given with ``--tokenizer PATH`` (faster, and for servers without the route).
A local tokenizer is checked against the server's ``/tokenize`` where the server has it
(:func:`require_same_tokens`): another tokenizer, even of the same vocabulary size, would change every number.

Every request goes to the server as token ids, so the windows, truncation and context/continuation split are
computed here, by the contract's rules, exactly as the transformers backend computes them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import lru_cache

from llamabench.backends.server.client import RequestRefused, ServerClient
from llamabench.errors import LlamabenchError

# Texts both tokenizers must split into the same ids: words, digits, runs of spaces, tabs and newlines, accented
# letters, other scripts, an emoji and code, so that a tokenizer differing in any of them is caught.
PROBE_TEXTS = (
    "The capital of France is Paris, and the quick brown fox jumps over the lazy dog.",
    "  two  spaces,\tone tab,\n\na blank line, trailing spaces   ",
    "Numbers: 0 1 12 123 1234 12,345.67 -8e-3 2026-12-07",
    "Naïve café, Ünïcödé façade: ﬁne “quotes” — déjà vu. Übermäßig. Ελληνικά, русский, 東京, 서울, 😀👍",
    "def f(x):\n    return {'a': [x ** 2, x // 3]}  # code\r\n",
)


class TokenizerMismatch(LlamabenchError):
    """``--tokenizer`` splits text otherwise than the server does."""


class NoTokenizeRoute(LlamabenchError):
    """The server has no ``/tokenize`` route (neither vLLM's nor llama.cpp's form)."""


class Tokens(ABC):
    """Encodes text without special tokens; knows the prefix token (BOS, else EOS) and hashes its vocabulary."""

    prefix_token: int | None
    identity: str  # what the cache key holds for the tokenizer

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    def chat(self, text: str) -> str | None:
        """``text`` as one user turn in the chat template, ready for generation; None without a template."""
        return None


class LocalTokens(Tokens):
    """A transformers tokenizer loaded from ``path`` (a folder or hub id)."""

    def __init__(self, path: str):
        from transformers import AutoTokenizer

        from llamabench.backends.common.model_facts import tokenizer_hash

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise LlamabenchError(
                f"--tokenizer {path} cannot be loaded ({type(exc).__name__}); pass a folder with a tokenizer"
            ) from None
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        self.prefix_token = bos if bos is not None else eos
        self.identity = f"local:{tokenizer_hash(self.tokenizer)}"

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def chat(self, text: str) -> str | None:
        if not getattr(self.tokenizer, "chat_template", None):
            return None
        messages = [{"role": "user", "content": text}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class ServerTokens(Tokens):
    """The server's ``/tokenize`` (vLLM and SGLang: ``prompt``; llama.cpp: ``content``), memoised per text.

    The prefix token comes from the server's tokenizer description (vLLM's ``/tokenizer_info``, served with
    ``--enable-tokenizer-info-endpoint``; llama.cpp's ``/props``): its BOS text, else its EOS text, tokenized.
    A server that names neither has no known prefix token: scoring then asks for ``--tokenizer``."""

    def __init__(self, client: ServerClient, model: str):
        self.client = client
        self.model = model
        self.form = self._probe_form()
        self._memo = lru_cache(maxsize=65536)(self._encode)  # contexts repeat across choices and windows
        self.prefix_token = self._describe()
        self.identity = f"server:{self.form}:prefix={self.prefix_token}"

    def _probe_form(self) -> str:
        for form in ("prompt", "content"):
            try:
                tokens = self._tokenize(form, "Hello world")
            except RequestRefused:
                continue
            if tokens:
                return form
        raise NoTokenizeRoute(
            f"server {self.client.base_url} has no /tokenize route; pass --tokenizer PATH (the served model's "
            "tokenizer folder)"
        )

    def _tokenize(self, form: str, text: str) -> list[int]:
        body = {"model": self.model, "prompt": text, "add_special_tokens": False}
        if form == "content":
            body = {"content": text, "add_special": False}
        answer = self.client.post("root:/tokenize", body)
        tokens = answer.get("tokens")
        if not (isinstance(tokens, list) and all(isinstance(t, int) for t in tokens)):
            raise LlamabenchError(f"server {self.client.base_url}: /tokenize answered without a list of token ids")
        return tokens

    def encode(self, text: str) -> list[int]:
        return list(self._memo(text))

    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(self._tokenize(self.form, text)) if text else ()

    def _describe(self) -> int | None:
        """The prefix token the server describes (None where it does not)."""
        for route in ("root:/tokenizer_info", "root:/props"):
            try:
                info = self.client.get(route)
            except RequestRefused:
                continue
            special = _token_text(info.get("bos_token")) or _token_text(info.get("eos_token"))
            ids = self._encode_special(special) if special else []
            if len(ids) == 1:
                return ids[0]
        return None

    def chat(self, text: str) -> str | None:
        """The server renders its own template: vLLM's ``/tokenize`` with ``messages`` then ``/detokenize``, or
        llama.cpp's ``/apply-template``; None when it has no template."""
        messages = [{"role": "user", "content": text}]
        try:
            if self.form == "content":
                prompt = self.client.post("root:/apply-template", {"messages": messages}).get("prompt")
            else:
                body = {"model": self.model, "messages": messages, "add_generation_prompt": True}
                tokens = self.client.post("root:/tokenize", {**body, "add_special_tokens": False}).get("tokens")
                prompt = self.client.post("root:/detokenize", {"model": self.model, "tokens": tokens}).get("prompt")
        except RequestRefused:
            return None
        return prompt if isinstance(prompt, str) else None

    def _encode_special(self, text: str) -> list[int]:
        """A special token's text as ids (vLLM and llama.cpp parse special tokens in /tokenize's text)."""
        body = {"model": self.model, "prompt": text, "add_special_tokens": False}
        if self.form == "content":
            body = {"content": text, "add_special": False, "parse_special": True}
        tokens = self.client.post("root:/tokenize", body).get("tokens")
        return tokens if isinstance(tokens, list) else []


def require_same_tokens(local: Tokens, client: ServerClient, model: str, path: str) -> None:
    """Refuse ``local`` (``--tokenizer path``) unless it gives the server's own ids for every text of
    :data:`PROBE_TEXTS` and the prefix token the server describes; a server without ``/tokenize`` cannot be
    asked, and ``local`` is then taken as given."""
    try:
        served = ServerTokens(client, model)
    except NoTokenizeRoute:
        return
    for text in PROBE_TEXTS:
        mine, theirs = local.encode(text), served.encode(text)
        if mine != theirs:
            at = next(
                (i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), min(len(mine), len(theirs))
            )
            raise TokenizerMismatch(
                f"--tokenizer {path} splits {text[:24]!r}... into other ids than server {client.base_url} (model "
                f"{model}) does (from token {at}: {mine[at : at + 3]} here, {theirs[at : at + 3]} there): pass the "
                "served model's own tokenizer, or leave --tokenizer out to tokenize on the server"
            )
    if served.prefix_token is not None and served.prefix_token != local.prefix_token:
        raise TokenizerMismatch(
            f"--tokenizer {path} has prefix token {local.prefix_token}, server {client.base_url} (model {model}) "
            f"{served.prefix_token}: pass the served model's own tokenizer, or leave --tokenizer out"
        )


def _token_text(value: object) -> str | None:
    """A tokenizer config's special token: its text, or the ``content`` of an added-token record."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None

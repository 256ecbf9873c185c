"""WordPiece: BERT's tokenizer for a `vocab.txt`, for users who bring one (train.py --vocab).

Without it, train.py builds a word-level data.Tokenizer from the training text; this class
has the same interface, so the rest of the program does not know which one it holds.

    tokenizer = WordPieceTokenizer.load("bert-base-uncased/vocab.txt")
    tokenizer.tokenize("Unaffable!")   # ['una', '##ffa', '##ble', '!']
"""
from __future__ import annotations

import io
import json
import re
import unicodedata

import numpy as np
import torch

from checkpoint import atomic_write
from realdata import DataError, read_text   # train.py prints it as one line; realdata does not import this file


class WordPieceTokenizer:
    """BERT's tokenizer for a `vocab.txt` (one token a line), with data.Tokenizer's interface.

    Basic step: lower-case, strip accents, split on whitespace and around punctuation.
    WordPiece step: split each word greedily into the longest vocabulary pieces, left to
    right, pieces after the first written "##piece"; a word with no such split is [UNK].
    """
    max_word_chars = 100  # BERT's limit: longer "words" are [UNK] outright

    def __init__(self, tokens: list[str]):
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        for special in ("[PAD]", "[UNK]", "[CLS]", "[SEP]"):
            if special not in self.stoi:
                raise ValueError(f"a WordPiece vocabulary needs {special}")
        self.PAD, self.UNK, self.CLS, self.SEP = (self.stoi[s] for s in ("[PAD]", "[UNK]", "[CLS]", "[SEP]"))

    @classmethod
    def load(cls, path) -> WordPieceTokenizer:
        """The vocabulary of a vocab.txt; a DataError naming the file where it is not one."""
        # one token a line, split as open() in text mode splits them (\n, \r\n or \r)
        tokens = [line.rstrip("\n") for line in io.StringIO(read_text(path), newline=None)]
        try:
            return cls(tokens)
        except ValueError as e:   # no [PAD], [UNK], [CLS] or [SEP]: an empty file, or not BERT's
            raise DataError(f"{path}: {e}" + (" (the file is empty)" if not tokens else "")) from e

    def to_dict(self) -> dict:
        """What a checkpoint keeps, to refuse a model trained with another vocabulary."""
        return {"kind": "wordpiece", "itos": list(self.itos)}

    def save(self, path) -> None:
        """The vocabulary as JSON, written atomically beside the run's checkpoints."""
        atomic_write(path, lambda f: f.write(json.dumps(self.to_dict()).encode()))

    def __len__(self) -> int:
        return len(self.itos)

    @staticmethod
    def basic_split(text: str) -> list[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")  # "é" -> "e"
        # A word is a run of letters / digits / marks; every other visible character is a token.
        return re.findall(r"[^\W_]+|[^\s\w]|_", text)

    def wordpiece(self, word: str) -> list[str]:
        if len(word) > self.max_word_chars:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):  # longest match first
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.stoi:
                    break
            else:
                return ["[UNK]"]  # some part of the word matches nothing: the whole word is unknown
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        return [p for word in self.basic_split(text) for p in self.wordpiece(word)]

    def encode(self, text: str) -> list[int]:
        """[CLS] pieces [SEP]."""
        return [self.CLS, *(self.stoi[p] for p in self.tokenize(text)), self.SEP]

    def decode(self, ids) -> str:
        words = " ".join(self.itos[i] for i in ids if i not in (self.PAD, self.CLS, self.SEP))
        return words.replace(" ##", "")

    def encode_batch(self, texts, max_len: int | None = None) -> torch.Tensor:
        """long [N, max_len] padded with [PAD] (max_len None: the longest text)."""
        encoded = [self.encode(t) for t in texts]
        longest = max((len(ids) for ids in encoded), default=0)
        if max_len is not None and longest > max_len:
            text, ids = next((t, ids) for t, ids in zip(texts, encoded) if len(ids) > max_len)
            raise ValueError(f"text needs {len(ids)} tokens, more than max_len={max_len}: {text!r}")
        out = np.full((len(texts), longest if max_len is None else max_len), self.PAD, dtype=np.int64)
        for row, ids in enumerate(encoded):
            out[row, : len(ids)] = ids
        return torch.from_numpy(out)

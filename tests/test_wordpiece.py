"""Tests of wordpiece.py: BERT's WordPiece on a hand-worked example, and vocab.txt files that are not one."""
import pytest

from realdata import DataError
from wordpiece import WordPieceTokenizer

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256))  # a binary file (a PNG's signature): not UTF-8


def test_wordpiece_hand_example(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "want", "##want", "##ed", "wa", "un", "runn", "##ing", ","]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = WordPieceTokenizer.load(tmp_path / "vocab.txt")
    # "UNwanted": lower-case; "é" loses its accent; "un" then the longest "##want", then "##ed".
    assert tok.tokenize("UNwant\u00e9d,running") == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert tok.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]  # "##x" exists nowhere
    assert tok.encode("want") == [2, 5, 3]
    batch = tok.encode_batch(["want", "wa, running"], max_len=6)
    assert batch.tolist() == [[2, 5, 3, 0, 0, 0], [2, 8, 12, 10, 11, 3]]
    assert tok.decode(batch[1].tolist()) == "wa , running"
    with pytest.raises(ValueError, match="more than max_len=3"):
        tok.encode_batch(["wa, running"], max_len=3)


def test_wordpiece_bad_vocab_files_name_the_file(tmp_path):
    path = tmp_path / "vocab.txt"
    for content, message in [(b"", r"needs \[PAD\] \(the file is empty\)"), (PNG_BYTES, "not UTF-8 text"),
                             (b"[PAD]\n[UNK]\n[CLS]\n", r"needs \[SEP\]$")]:
        path.write_bytes(content)
        with pytest.raises(DataError, match=f"vocab.txt: .*{message}"):
            WordPieceTokenizer.load(path)
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(DataError, match="folder.txt: cannot read"):
        WordPieceTokenizer.load(tmp_path / "folder.txt")

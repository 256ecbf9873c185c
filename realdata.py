"""Reading the real data sets DiDE is evaluated on: VQA v2, NLVR2 and SNLI-VE (DATASETS.md Part 1).

Each reader takes the root folder of a copy you downloaded yourself (nothing here downloads)
and returns a plain list of example dicts: image path(s), text, label or answers, id. A file
that is missing or malformed raises `DataError`, naming the file (and the line, for JSON
Lines) and the paths that were searched. Also here: the official VQA v2 answer normalisation
and accuracy (`vqaEval.py`), NLVR2 consistency (`eval/metrics.py`), a ViLT-style image loader,
and a WordPiece tokenizer for a BERT `vocab.txt` with the interface of data.Tokenizer.

    examples = read_nlvr2("/data/nlvr2", "dev")
    vocab = build_answer_vocab(e["multiple_choice_answer"] for e in read_vqa(root, "train"))
    train = read_vqa(root, "train", answer_vocab=vocab)
"""
from __future__ import annotations

import json
import re
import unicodedata
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class DataError(ValueError):
    """A data file is missing or does not have the official layout."""


# ------------------------------------------------------------------ VQA v2 answer normalisation
# The tables below are copied from the official evaluation, GT-Vision-Lab/VQA vqaEval.py,
# quirks included (the capitalised keys never match, since the text is lower-cased first;
# "somebody'd" maps to "somebodyd"), so that accuracies are comparable with published ones.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
              "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ("a", "an", "the")
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
               ",", "?", "!")
COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# Sic: "(?!<=\d)" is a look-ahead, not the look-behind "(?<!\d)" that was meant, so the pattern
# removes every period not followed by a digit ("yes." -> "yes", but "3.5" stays).
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")


def process_punctuation(text: str) -> str:
    """vqaEval.processPunctuation: delete or blank out punctuation, then strip periods."""
    out = text
    for p in PUNCTUATION:
        # Next to a space ("yes, it is") or anywhere in a number like "1,000": delete it;
        # otherwise it separates words ("black-and-white" -> "black and white").
        if p + " " in text or " " + p in text or COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The official call is periodStrip.sub("", outText, re.UNICODE): the flag lands in the
    # `count` argument (re.UNICODE == 32), so at most 32 periods go. Reproduced on purpose.
    return PERIOD_STRIP.sub("", out, count=re.UNICODE)


def process_digit_article(text: str) -> str:
    """vqaEval.processDigitArticle: lower-case, number words to digits, drop articles, fix contractions."""
    words = [MANUAL_MAP.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def _strip(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """The full official normalisation of one answer string."""
    return process_digit_article(process_punctuation(_strip(text)))


def vqa_official_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """vqaEval's accuracy of one prediction against the (ten) annotators' answers, in [0, 1].

    Mean over the leave-one-annotator-out subsets of min(1, matches among the others / 3).
    Quirk kept from the official code: when all ground-truth answers are identical, nothing
    is normalised, only stripped, so "Yes" scores 0 against ten "yes".
    """
    if not gt_answers:
        raise ValueError("vqa_official_accuracy needs at least one ground-truth answer")
    pred, gts = _strip(prediction), [_strip(a) for a in gt_answers]
    if len(set(gts)) > 1:
        pred, gts = normalize_answer(pred), [normalize_answer(a) for a in gts]
    accs = [min(1.0, sum(g == pred for g in gts[:i] + gts[i + 1:]) / 3) for i in range(len(gts))]
    return sum(accs) / len(accs)


def soft_score(count: int) -> float:
    """BUTD/ViLT training target for an answer given by `count` annotators; equals the
    official accuracy of predicting it (DATASETS.md §1.3): 0, .3, .6, .9, then 1."""
    return (0.0, 0.3, 0.6, 0.9)[count] if count < 4 else 1.0  # a table: 0.3 * 3 != 0.9 in floating point


def build_answer_vocab(multiple_choice_answers, min_count: int = 9) -> list[str]:
    """Normalised answers seen at least `min_count` times, in first-occurrence order (ViLT).

    Pass the training (and, as ViLT does, validation) `multiple_choice_answer`s; with the
    default threshold the official train+val files give the usual 3,129 answers.
    """
    normalised = [normalize_answer(a) for a in multiple_choice_answers]
    counts = Counter(normalised)
    return [a for a in dict.fromkeys(normalised) if counts[a] >= min_count]  # dict: ordered set


# ------------------------------------------------------------------ shared file helpers
def _first_existing(candidates: list[Path], what: str) -> Path:
    for path in candidates:
        if path.exists():
            return path
    searched = "\n  ".join(str(p) for p in candidates)
    raise DataError(f"{what} not found (nothing is downloaded); searched:\n  {searched}")


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e


def _read_jsonl(path: Path):
    """Yield (line number, object) for each non-blank line of a JSON Lines file."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line_no}: not valid JSON ({e.msg})") from e
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
            yield line_no, obj


def _field(obj: dict, key: str, where: str):
    if key not in obj:
        raise DataError(f"{where}: missing field {key!r} (has {sorted(obj)})")
    return obj[key]


def _text(obj: dict, key: str, where: str) -> str:
    text = _field(obj, key, where)
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: field {key!r} is empty or not a string: {text!r}")
    return text


def _image_or_missing(candidates: list[Path], missing: str, where: str) -> str | None:
    """The first candidate that exists; None (to skip the example) or DataError if none does."""
    for path in candidates:
        if path.is_file():
            return str(path)
    if missing == "error":
        searched = ", ".join(str(p) for p in candidates)
        raise DataError(f"{where}: image not found; searched: {searched} (missing='skip' skips such examples)")
    return None


def _check_missing(missing: str) -> None:
    if missing not in ("skip", "error"):
        raise ValueError(f"missing must be 'skip' or 'error', not {missing!r}")


def _warn_skipped(skipped: int, total: int, source: Path) -> None:
    # One warning per file, with the count: NLVR2 alone misses about 5% of its images.
    if skipped:
        warnings.warn(f"{source}: skipped {skipped} of {total} examples whose images are missing", stacklevel=3)


# ------------------------------------------------------------------ VQA v2
def _vqa_subtypes(split: str) -> tuple[str, str]:
    """(data subtype of the JSON files, image folder) for train / val / test / test-dev."""
    subtypes = {"train": ("train2014", "train2014"), "val": ("val2014", "val2014"),
                "test": ("test2015", "test2015"), "test-dev": ("test-dev2015", "test2015")}
    if split not in subtypes:
        raise ValueError(f"VQA v2 split must be one of {sorted(subtypes)}, not {split!r}")
    return subtypes[split]


def read_vqa(root, split: str, answer_vocab: list[str] | None = None, missing: str = "skip",
             drop_unanswerable: bool | None = None) -> list[dict]:
    """VQA v2 examples, one per question, in the questions file's order.

    Each: question_id, image_id, image (path), question, and, where annotations exist (not
    test), answers (the ten annotators' strings) and multiple_choice_answer. With an
    `answer_vocab`, also labels / scores: the soft targets (see `add_soft_targets`).
    Accepts the flat layout of ViLT's DATA.md and the official Questions/ Annotations/ Images/mscoco/ tree.
    """
    _check_missing(missing)
    root, (subtype, image_subtype) = Path(root), _vqa_subtypes(split)
    questions_path = _first_existing(
        [root / f"v2_OpenEnded_mscoco_{subtype}_questions.json",
         root / "Questions" / f"v2_OpenEnded_mscoco_{subtype}_questions.json"], f"VQA v2 {split} questions")
    image_dir = _first_existing([root / image_subtype, root / "Images" / "mscoco" / image_subtype],
                                f"VQA v2 {split} image folder")
    annotations = None
    if split in ("train", "val"):  # the test splits have questions only
        annotations_path = _first_existing(
            [root / f"v2_mscoco_{subtype}_annotations.json",
             root / "Annotations" / f"v2_mscoco_{subtype}_annotations.json"], f"VQA v2 {split} annotations")
        annotations = {}
        for i, ann in enumerate(_field(_load_json(annotations_path), "annotations", str(annotations_path))):
            where = f"{annotations_path}: annotations[{i}]"
            answers = [_field(a, "answer", where) for a in _field(ann, "answers", where)]
            annotations[_field(ann, "question_id", where)] = {
                "answers": answers, "multiple_choice_answer": _field(ann, "multiple_choice_answer", where)}

    examples, skipped, image_paths = [], 0, {}  # image_paths: many questions share an image
    questions = _field(_load_json(questions_path), "questions", str(questions_path))
    for i, q in enumerate(questions):
        where = f"{questions_path}: questions[{i}]"
        question_id, image_id = _field(q, "question_id", where), _field(q, "image_id", where)
        if image_id not in image_paths:
            name = f"COCO_{image_subtype}_{int(image_id):012d}.jpg"
            image_paths[image_id] = _image_or_missing([image_dir / name], missing, where)
        if image_paths[image_id] is None:
            skipped += 1
            continue
        example = {"question_id": question_id, "image_id": image_id, "image": image_paths[image_id],
                   "question": _text(q, "question", where)}
        if annotations is not None:
            if question_id not in annotations:
                raise DataError(f"{where}: question_id {question_id} has no entry in the annotations file")
            example.update(annotations[question_id])
        examples.append(example)
    _warn_skipped(skipped, len(questions), questions_path)
    if answer_vocab is not None and annotations is not None:
        drop = split == "train" if drop_unanswerable is None else drop_unanswerable
        examples = add_soft_targets(examples, answer_vocab, drop_unanswerable=drop)
    return examples


def add_soft_targets(examples: list[dict], answer_vocab: list[str], drop_unanswerable: bool) -> list[dict]:
    """New example dicts with labels (vocabulary indices) and scores (soft_score of each).

    For each distinct annotator answer in the vocabulary: soft_score(how many gave it);
    answers outside the vocabulary are dropped. ViLT drops training questions left with no
    label, since they teach only "none of the above"; evaluation must keep every question.
    Unlike ViLT, the annotators' answers are normalised like the vocabulary before matching.
    """
    index = {a: i for i, a in enumerate(answer_vocab)}
    out, dropped = [], 0
    for ex in examples:
        counts = Counter(normalize_answer(a) for a in ex["answers"])
        in_vocab = [a for a in counts if a in index]
        if not in_vocab and drop_unanswerable:
            dropped += 1
            continue
        out.append({**ex, "labels": [index[a] for a in in_vocab], "scores": [soft_score(counts[a]) for a in in_vocab]})
    if dropped:
        warnings.warn(f"dropped {dropped} of {len(examples)} questions with no answer in the "
                      f"{len(answer_vocab)}-answer vocabulary", stacklevel=2)
    return out


def write_vqa_results(path, question_ids, answers) -> None:
    """The results file for the evaluation server: [{"question_id": int, "answer": str}, ...].

    It must hold every question id of the split exactly once (vqa.py loadRes asserts it).
    """
    question_ids, answers = [int(q) for q in question_ids], [str(a) for a in answers]
    if len(question_ids) != len(answers):
        raise ValueError(f"{len(question_ids)} question ids but {len(answers)} answers")
    if len(set(question_ids)) != len(question_ids):
        raise ValueError("question ids repeat; the server expects each exactly once")
    with open(path, "w", encoding="utf-8") as f:
        json.dump([{"question_id": q, "answer": a} for q, a in zip(question_ids, answers)], f)


# ------------------------------------------------------------------ NLVR2
def read_nlvr2(root, split: str, missing: str = "skip") -> list[dict]:
    """NLVR2 examples, one per JSON line: identifier, sentence, label (bool), images [left, right].

    Annotations: {root}/nlvr2/data/{split}.json (the cloned lil-lab/nlvr repo) or {root}/{split}.json,
    JSON Lines despite the name. Images: train under images/train/{directory}/ (or train/{directory}/),
    dev / test1 / test2 flat under {split}/. Their ".png" files may hold JPEGs: `load_image` copes.
    """
    _check_missing(missing)
    root = Path(root)
    ann_path = _first_existing([root / "nlvr2" / "data" / f"{split}.json", root / f"{split}.json"],
                               f"NLVR2 {split} annotations")
    examples, skipped, total = [], 0, 0
    for line_no, obj in _read_jsonl(ann_path):
        where, total = f"{ann_path}:{line_no}", total + 1
        identifier = _text(obj, "identifier", where)
        sentence = _text(obj, "sentence", where)
        label = str(_field(obj, "label", where)).lower()  # "True" / "False"; eval/metrics.py lower-cases too
        if label not in ("true", "false"):
            raise DataError(f"{where}: label must be 'True' or 'False', not {obj['label']!r}")
        if split == "train":  # only train images sit in a 0..99 bucket, named by the line's directory
            directory = str(_field(obj, "directory", where))
            folders = [root / "images" / "train" / directory, root / "train" / directory]
        else:
            folders = [root / split, root / "images" / split]
        pair = "-".join(identifier.split("-")[:3])  # split-set_id-pair_id: the sentence_id is not in the name
        images = [_image_or_missing([d / f"{pair}-img{k}.png" for d in folders], missing, where) for k in (0, 1)]
        if None in images:
            skipped += 1
            continue
        examples.append({"identifier": identifier, "sentence": sentence, "label": label == "true", "images": images})
    _warn_skipped(skipped, total, ann_path)
    return examples


def nlvr2_consistency(identifiers, correct) -> float:
    """Fraction of sentences right on every image pair they were written for (eval/metrics.py).

    Examples are grouped by identifier without its pair_id part: split-set_id-sentence_id.
    """
    groups: dict[str, bool] = {}
    for identifier, ok in zip(identifiers, correct, strict=True):
        parts = identifier.split("-")
        key = "-".join([parts[0], parts[1], parts[-1]])
        groups[key] = groups.get(key, True) and bool(ok)
    if not groups:
        raise ValueError("nlvr2_consistency needs at least one example")
    return sum(groups.values()) / len(groups)


# ------------------------------------------------------------------ SNLI-VE
SNLI_VE_LABELS = ("contradiction", "entailment", "neutral")  # label_id order of DiDE's write_snli_ve.py
FLICKR_ID_KEYS = ("Flikr30kID", "Flickr30K_ID", "Flickr30kID")  # sic: the generator's 2018 spelling first


def _flickr_id(obj: dict, where: str) -> str:
    """The Flickr30k image id: the first id key present, else pairID / captionID before ".jpg"."""
    for key in FLICKR_ID_KEYS:
        if key in obj:
            image_id = str(obj[key])
            break
    else:
        source = obj.get("pairID", obj.get("captionID"))
        if not isinstance(source, str) or ".jpg" not in source:
            raise DataError(f"{where}: no image id: none of {FLICKR_ID_KEYS}, and no pairID/captionID with '.jpg'")
        image_id = source[: source.rfind(".jpg")]  # "3416050480.jpg#4r1n" -> "3416050480"
    return image_id.removesuffix(".jpg")  # the 2018 files keep the extension, later ones do not


def read_snli_ve(root, split: str, image_dir=None, missing: str = "skip") -> list[dict]:
    """SNLI-VE examples from snli_ve_{train,dev,test}.jsonl: pair_id, image, hypothesis, label, label_id.

    The hypothesis is `sentence2`. `sentence1` is the Flickr30k caption of the very image, and
    feeding it to the model would turn visual entailment back into text-only NLI.
    Images: {image_dir}/{id}.jpg, by default {root}/flickr30k_images/ or {root}/flickr30k-images/.
    """
    _check_missing(missing)
    root = Path(root)
    ann_path = _first_existing([root / f"snli_ve_{split}.jsonl", root / "data" / f"snli_ve_{split}.jsonl"],
                               f"SNLI-VE {split} annotations")
    # flickr30k-images/ is the official Flickr30k release, flickr30k_images/ the tarball SNLI-VE's script fetches.
    folders = [Path(image_dir)] if image_dir is not None else [root / "flickr30k_images", root / "flickr30k-images"]
    image_folder = _first_existing(folders, "SNLI-VE Flickr30k image folder")
    examples, skipped, total = [], 0, 0
    for line_no, obj in _read_jsonl(ann_path):
        where, total = f"{ann_path}:{line_no}", total + 1
        label = _field(obj, "gold_label", where)
        if label == "-":  # no majority among the annotators; the released files have none left
            continue
        if label not in SNLI_VE_LABELS:
            raise DataError(f"{where}: gold_label must be one of {SNLI_VE_LABELS} or '-', not {label!r}")
        hypothesis = _text(obj, "sentence2", where)
        image = _image_or_missing([image_folder / f"{_flickr_id(obj, where)}.jpg"], missing, where)
        if image is None:
            skipped += 1
            continue
        examples.append({"pair_id": obj.get("pairID", f"{split}-{line_no}"), "image": image, "hypothesis": hypothesis,
                         "label": label, "label_id": SNLI_VE_LABELS.index(label)})
    _warn_skipped(skipped, total, ann_path)
    return examples


# ------------------------------------------------------------------ images
def vilt_size(width: int, height: int, size: int, patch: int | None = None) -> tuple[int, int]:
    """(width, height) after ViLT's resize: shorter side to `size`, longer side at most
    size * 640 / 384 (keeping the aspect ratio), each rounded down to a multiple of `patch`."""
    longer = size * 640 / 384
    scale = size / min(width, height)
    w, h = width * scale, height * scale
    if max(w, h) > longer:  # a very wide or tall image: cap the longer side instead
        w, h = w * longer / max(w, h), h * longer / max(w, h)
    w, h = int(w + 0.5), int(h + 0.5)
    if patch:
        w, h = max(patch, w // patch * patch), max(patch, h // patch * patch)
    return w, h


def load_image(path, size: int, patch: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB, resized as ViLT does; DataError naming the file if it cannot be read.

    Pillow reads the format from the file's header, so NLVR2's JPEGs named .png open fine.
    Truncated files fail loudly: ImageFile.LOAD_TRUNCATED_IMAGES would pad them with grey.
    """
    try:
        with Image.open(path) as im:
            im.load()  # decode now, inside the try: Image.open only reads the header
            rgb = im.convert("RGB")  # L, LA, P, RGBA, CMYK (some COCO JPEGs) -> RGB
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from e
    rgb = rgb.resize(vilt_size(*rgb.size, size, patch), resample=Image.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)  # [H, W, 3]


# ------------------------------------------------------------------ WordPiece
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
        with open(path, encoding="utf-8") as f:
            return cls([line.rstrip("\n") for line in f])

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

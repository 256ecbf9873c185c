"""Reading the real data sets DiDE is evaluated on: VQA v2, NLVR2 and SNLI-VE (README, "Real data sets").

Each reader takes the root folder of a copy you downloaded yourself (nothing here downloads)
and returns a plain list of example dicts: image path(s), text, label or answers, id. A file
that is missing, malformed or empty raises `DataError`, naming the file (and the line, for JSON
Lines) and the paths that were searched; so does a VQA question id given twice. Also here: a
ViLT-style image loader. The official answer normalisation and metrics are in metrics.py, the
WordPiece tokenizer in wordpiece.py.

    examples = read_nlvr2("/data/nlvr2", "dev")
    vocab = build_answer_vocab(e["multiple_choice_answer"] for e in read_vqa(root, "train"))
    train = read_vqa(root, "train", answer_vocab=vocab)
    val = read_split("nlvr2", "/data/nlvr2", SPLITS["nlvr2"]["val"])  # our validation split: NLVR2's dev
"""
from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from checkpoint import atomic_write
from metrics import build_answer_vocab, normalize_answer, soft_score  # noqa: F401 (build_answer_vocab: for callers)
from programs import ENTAILMENT_LABELS


class DataError(ValueError):
    """A data file is missing or does not have the official layout."""


# ------------------------------------------------------------------ shared file helpers
def _first_existing(candidates: list[Path], what: str, folder: bool = False) -> Path:
    """The first candidate that is a file (with folder=True: a folder); else DataError listing them."""
    for path in candidates:
        if path.is_dir() if folder else path.is_file():
            return path
    wanted = "folder" if folder else "file"  # a dev.json that is a folder is named so, not left as "not found"
    searched = "\n  ".join(f"{p} (not a {wanted})" if p.exists() else str(p) for p in candidates)
    raise DataError(f"{what} not found (nothing is downloaded); searched:\n  {searched}")


def _open(path: Path):
    """The file, opened for reading bytes; DataError if it cannot be (permissions, a folder)."""
    try:
        return open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from e


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text (a binary file, or a download that failed?)") from e


def read_text(path) -> str:
    """A UTF-8 text file, whole; DataError naming it where it cannot be read or is not text."""
    with _open(path) as f:
        return _decode(f.read(), str(path))


def _load_json(path: Path):
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e


def _read_jsonl(path: Path):
    """Yield (line number, object) for each non-blank line of a JSON Lines file."""
    with _open(path) as f:  # bytes, decoded line by line: a bad byte is reported with its line
        for line_no, raw in enumerate(f, start=1):
            line = _decode(raw, f"{path}:{line_no}")
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
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}: {str(obj)[:60]!r}")
    if key not in obj:
        raise DataError(f"{where}: missing field {key!r} (has {sorted(obj)})")
    return obj[key]


def _list(obj: dict, key: str, where: str) -> list:
    items = _field(obj, key, where)
    if not isinstance(items, list):
        raise DataError(f"{where}: field {key!r} must be a list, not {type(items).__name__}: {str(items)[:60]!r}")
    return items


def _integer(obj: dict, key: str, where: str) -> int:
    """An id: a JSON integer, or a string of digits, returned as an int (COCO file names and results need one)."""
    value = _field(obj, key, where)
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DataError(f"{where}: field {key!r} must be an integer, not {value!r}")
    return value


def _text(obj: dict, key: str, where: str, blank_ok: bool = False) -> str:
    text = _field(obj, key, where)
    if not isinstance(text, str) or not (blank_ok or text.strip()):
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
VQA_ANSWER_TYPES = ("yes/no", "number", "other")  # each annotation's answer_type: the official per-type breakdown


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
    test), answers (the ten annotators' strings), multiple_choice_answer, answer_type (one of
    VQA_ANSWER_TYPES) and question_type (e.g. "how many"), for vqaEval's per-type accuracies.
    With an `answer_vocab`, also labels / scores: the soft targets (see `add_soft_targets`).
    Accepts the flat layout of ViLT's DATA.md and the official Questions/ Annotations/ Images/mscoco/ tree.
    """
    _check_missing(missing)
    root, (subtype, image_subtype) = Path(root), _vqa_subtypes(split)
    questions_path = _first_existing(
        [root / f"v2_OpenEnded_mscoco_{subtype}_questions.json",
         root / "Questions" / f"v2_OpenEnded_mscoco_{subtype}_questions.json"], f"VQA v2 {split} questions")
    image_dir = _first_existing([root / image_subtype, root / "Images" / "mscoco" / image_subtype],
                                f"VQA v2 {split} image folder", folder=True)
    annotations = None
    if split in ("train", "val"):  # the test splits have questions only
        annotations_path = _first_existing(
            [root / f"v2_mscoco_{subtype}_annotations.json",
             root / "Annotations" / f"v2_mscoco_{subtype}_annotations.json"], f"VQA v2 {split} annotations")
        annotations, first_entry = {}, {}  # first_entry: question_id -> index, to name both entries of a repeat
        for i, ann in enumerate(_list(_load_json(annotations_path), "annotations", str(annotations_path))):
            where = f"{annotations_path}: annotations[{i}]"
            answers = [_text(a, "answer", where, blank_ok=True) for a in _list(ann, "answers", where)]
            answer_type = _field(ann, "answer_type", where)
            if answer_type not in VQA_ANSWER_TYPES:
                raise DataError(f"{where}: answer_type must be one of {VQA_ANSWER_TYPES}, not {answer_type!r}")
            question_id = _integer(ann, "question_id", where)
            if question_id in first_entry:
                raise DataError(f"{where}: question_id {question_id} repeats annotations[{first_entry[question_id]}]")
            first_entry[question_id] = i
            annotations[question_id] = {
                "answers": answers, "answer_type": answer_type, "question_type": _field(ann, "question_type", where),
                "multiple_choice_answer": _text(ann, "multiple_choice_answer", where, blank_ok=True)}

    examples, skipped, image_paths, first_question = [], 0, {}, {}  # image_paths: many questions share an image
    questions = _list(_load_json(questions_path), "questions", str(questions_path))
    if not questions:
        raise DataError(f"{questions_path}: holds no questions")
    for i, q in enumerate(questions):
        where = f"{questions_path}: questions[{i}]"
        question_id, image_id = _integer(q, "question_id", where), _integer(q, "image_id", where)
        if question_id in first_question:  # found now, not when the results file is written after training
            raise DataError(f"{where}: question_id {question_id} repeats questions[{first_question[question_id]}]")
        first_question[question_id] = i
        if image_id not in image_paths:
            name = f"COCO_{image_subtype}_{image_id:012d}.jpg"
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
    results = [{"question_id": q, "answer": a} for q, a in zip(question_ids, answers)]
    atomic_write(path, lambda f: f.write(json.dumps(results).encode()))


# ------------------------------------------------------------------ NLVR2
def _nlvr2_image_index(root: Path) -> dict[str, Path]:
    """File name -> path of every *-img0.png / *-img1.png under root (symbolic links to folders are not followed)."""
    index, duplicates = {}, 0
    for path in sorted(root.rglob("*-img[01].png")):  # sorted: the same copy wins on every machine
        if path.name in index:
            duplicates += 1
        else:
            index[path.name] = path
    if duplicates:
        warnings.warn(f"{root}: {duplicates} NLVR2 image names occur more than once; the first path "
                      f"in sorted order is used", stacklevel=3)
    return index


def read_nlvr2(root, split: str, missing: str = "skip") -> list[dict]:
    """NLVR2 examples, one per JSON line: identifier, sentence, label (bool), images [left, right].

    Annotations: {root}/nlvr2/data/{split}.json (the cloned lil-lab/nlvr repo) or {root}/{split}.json,
    JSON Lines despite the name. Images: train under images/train/{directory}/ (or train/{directory}/),
    dev / test1 / test2 flat under {split}/ (or images/{split}/). Where none of an example's
    standard folders exists, its images are looked up by name anywhere under root.
    Their ".png" files may hold JPEGs: `load_image` copes.
    """
    _check_missing(missing)
    root = Path(root)
    ann_path = _first_existing([root / "nlvr2" / "data" / f"{split}.json", root / f"{split}.json"],
                               f"NLVR2 {split} annotations")
    examples, skipped, total, index = [], 0, 0, None  # index: built on first need, once per call
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
        names = [f"{pair}-img{k}.png" for k in (0, 1)]
        if any(d.is_dir() for d in folders):  # the standard layout keeps priority
            candidates = [[d / name for d in folders] for name in names]
        else:  # an unusual layout: find the names anywhere under root
            index = _nlvr2_image_index(root) if index is None else index
            # root / "**" / name never exists; it stands for the recursive search in the error message
            candidates = [[index.get(name, root / "**" / name)] for name in names]
        images = [_image_or_missing(paths, missing, where) for paths in candidates]
        if None in images:
            skipped += 1
            continue
        examples.append({"identifier": identifier, "sentence": sentence, "label": label == "true", "images": images})
    if not total:  # said here: make_split would blame missing images or --val-examples
        raise DataError(f"{ann_path}: holds no examples")
    _warn_skipped(skipped, total, ann_path)
    return examples


# ------------------------------------------------------------------ SNLI-VE
# label_id follows the project's order, programs.ENTAILMENT_LABELS, so that a head trained on the
# built-in benchmark and one trained on SNLI-VE mean the same thing by each id. Others differ:
#   code                          entailment  neutral  contradiction
#   ours (programs.py)                0          1          2
#   DiDE write_snli_ve.py             1          2          0
#   ALBEF ve_dataset                  2          1          0
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


def _is_json_list(path: Path) -> bool:
    """Whether the file holds one top-level JSON list ("[") rather than JSON Lines ("{" on each line)."""
    with _open(path) as f:
        return f.read(4096).lstrip().startswith(b"[")


def _read_json_list(path: Path):
    """Yield (index, object) for each element of a file holding one top-level JSON list."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list, got {type(data).__name__}")
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise DataError(f"{path}: [{i}]: expected a JSON object, got {type(obj).__name__}")
        yield i, obj


def read_snli_ve(root, split: str, image_dir=None, missing: str = "skip") -> list[dict]:
    """SNLI-VE examples: pair_id, image, hypothesis, label, label_id (index in ENTAILMENT_LABELS).

    Official layout first: snli_ve_{split}.jsonl, SNLI lines with the hypothesis in `sentence2`.
    Else ALBEF / DiDE's {split}.json or ve_{split}.json: one JSON list of {"image": flickr id,
    "sentence": hypothesis, "label": ...} (a .json file holding JSON Lines is read as official).
    `sentence1`, the Flickr30k caption of the very image, is never read: feeding it to the model
    would turn visual entailment back into text-only NLI.
    Images: {image_dir}/{id}.jpg, by default {root}/flickr30k_images/, flickr30k-images/ or images/.
    """
    _check_missing(missing)
    root = Path(root)
    ann_path = _first_existing([root / f"snli_ve_{split}.jsonl", root / "data" / f"snli_ve_{split}.jsonl",
                                root / f"{split}.json", root / f"ve_{split}.json"], f"SNLI-VE {split} annotations")
    # flickr30k-images/ is the official Flickr30k release, flickr30k_images/ the tarball SNLI-VE's
    # script fetches (which also links it as images/), images/ what ALBEF and DiDE read.
    folders = ([Path(image_dir)] if image_dir is not None
               else [root / "flickr30k_images", root / "flickr30k-images", root / "images"])
    image_folder = _first_existing(folders, "SNLI-VE Flickr30k image folder", folder=True)
    albef = _is_json_list(ann_path)
    if albef:
        rows = ((f"{ann_path}: [{i}]", i, obj) for i, obj in _read_json_list(ann_path))
        label_key, hypothesis_key = "label", "sentence"
    else:
        rows = ((f"{ann_path}:{line_no}", line_no, obj) for line_no, obj in _read_jsonl(ann_path))
        label_key, hypothesis_key = "gold_label", "sentence2"
    examples, skipped, total = [], 0, 0
    for where, position, obj in rows:
        total += 1
        label = _field(obj, label_key, where)
        if label == "-":  # no majority among the annotators; the released files have none left
            continue
        if label not in ENTAILMENT_LABELS:
            raise DataError(f"{where}: {label_key} must be one of {ENTAILMENT_LABELS} or '-', not {label!r}")
        hypothesis = _text(obj, hypothesis_key, where)
        # ALBEF writes "%s.jpg" % image: strip an extension that is already there, so no "x.jpg.jpg"
        image_id = str(_field(obj, "image", where)).removesuffix(".jpg") if albef else _flickr_id(obj, where)
        image = _image_or_missing([image_folder / f"{image_id}.jpg"], missing, where)
        if image is None:
            skipped += 1
            continue
        examples.append({"pair_id": obj.get("pairID", f"{split}-{position}"), "image": image,
                         "hypothesis": hypothesis, "label": label, "label_id": ENTAILMENT_LABELS.index(label)})
    if not total:  # said here: make_split would blame missing images or --val-examples
        raise DataError(f"{ann_path}: holds no examples")
    _warn_skipped(skipped, total, ann_path)
    return examples


# ------------------------------------------------------------------ one entry point
# Which official split serves as our train / validation / test. VQA v2's test splits (test2015,
# test-dev2015) have no public annotations, only the evaluation server, so local testing is on
# val2014, which validation then shares. NLVR2's test1 is the public test.
SPLITS = {"vqav2": {"train": "train", "val": "val", "test": "val"},
          "nlvr2": {"train": "train", "val": "dev", "test": "test1"},
          "snli-ve": {"train": "train", "val": "dev", "test": "test"}}
READERS = {"vqav2": read_vqa, "nlvr2": read_nlvr2, "snli-ve": read_snli_ve}


def read_split(name: str, root, split: str, **kwargs) -> list[dict]:
    """Examples of an official `split` of data set `name` ("vqav2", "nlvr2", "snli-ve"), read by
    its reader with kwargs (missing=, answer_vocab=, image_dir=). Our splits: SPLITS[name]."""
    if name not in READERS:
        raise ValueError(f"data set must be one of {sorted(READERS)}, not {name!r}")
    return READERS[name](root, split, **kwargs)


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
    return np.array(rgb, dtype=np.uint8)  # [H, W, 3], writable (torch.from_numpy shares it)
